"""The image check: the Containerfile's install steps run here, then every function started as its Service says.

No container engine on CI, so this proves what it can of the image: `scripts/image/install.sh` run with the
Containerfile's own arguments (its paths moved under a temporary directory) builds the wheel, installs it and
uv.lock's runtime dependencies into a clean venv, and compiles the functions; then every Service of knative/
is started with its manifest's command and environment (the cluster's addresses replaced by this machine's,
secrets given as the overlays' Secret would), the image's ENV, a non-root user (nobody, when the test runs as
root), a read-only working directory and a HOME that does not exist. Each must answer its readiness probe and
its first request: a real CloudEvent of the type its Trigger delivers where one needs no other set-up (vision,
rules, answer, reward, dead-letter), GET /healthz for the others.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cloudevents.conversion import to_binary

from eco2_tools.local.processes import die_with_parent
from eco2_tools.local.replicas import free_port
from eco2_tools.manifests import Manifests
from tests.benchmarks.functions import event_for, first_2xx
from tests.deploy.containerfile import Containerfile
from tests.support import REDIS_TEST_URL, ROOT, Child

CONTAINERFILE = ROOT / "Containerfile"
HOST = "127.0.0.1"
NOBODY = 65534
INSTALL_TIMEOUT = 240.0
START_TIMEOUT = 60.0  # every function starts at once on a shared 2-core machine
# What a Secret gives the functions in the overlays (secretKeyRef), and the cluster's addresses made local.
LOCAL_ENV = {
    "REDIS_URL": REDIS_TEST_URL,
    "AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
    "K_SINK": "http://127.0.0.1:9",  # nothing is sent on: the stages answer with the next event
    "ECO2_JWT_SECRET": "image-check-secret-of-at-least-32-bytes",
    "OPENAI_API_KEY": "sk-image-check",
}


@dataclass
class InstalledImage:
    root: Path  # stands for the image's /
    containerfile: Containerfile
    writable: Path  # a directory the functions' user may write (SQLite), as an emptyDir volume would be

    def path(self, image_path: str) -> str:
        """An absolute path of the image, under `root`; anything else unchanged."""
        return str(self.root / image_path.lstrip("/")) if image_path.startswith("/") else image_path

    def env(self) -> dict[str, str]:
        """The final stage's ENV with its paths moved under `root` (PATH: only those the install created)."""
        env = dict(self.containerfile.env)
        env["PATH"] = ":".join(
            self.path(part) if part.startswith("/") and Path(self.path(part)).exists() else part
            for part in env.get("PATH", "").replace("$PATH", "/usr/bin:/bin").split(":")
        )
        env["ECO2_ROOT"] = self.path(env["ECO2_ROOT"])
        return env


def _uv() -> str:
    """uv as scripts/lib.sh installs it (beside the base interpreter, as pip puts it), or on PATH."""
    for candidate in (os.environ.get("UV"), str(Path(sys.base_prefix) / "bin" / "uv"), shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("uv is not installed: scripts/test.sh installs it (python3 -m pip install uv)")


def _reachable_by_anyone(path: Path) -> bool:
    """Whether any user may run the file: it and every directory above it open to others."""
    real = path.resolve()
    return real.is_file() and all(p.stat().st_mode & stat.S_IXOTH for p in (real, *real.parents))


def _image_python() -> str:
    """A clean CPython of the project's version (not the dev venv's) that the functions' user can run: the venv
    links to it, and a pyenv interpreter under /root is out of nobody's reach."""
    candidates = [Path(sys.base_prefix) / "bin" / "python3", Path("/usr/local/bin/python3"), Path("/usr/bin/python3")]
    for candidate in candidates:
        if _reachable_by_anyone(candidate):
            return str(candidate)
    pytest.fail(f"no Python that a non-root user can run among {', '.join(map(str, candidates))}")


# What only the Celery worker mode loads, and what functions-framework requires for servers the pack never runs.
WORKER_ONLY = {"celery", "kombu", "billiard", "gevent", "vine", "amqp"}
UNUSED_BY_SERVE = {"gunicorn", "uvicorn-worker", "watchdog"}


def installed_distributions(venv: Path) -> set[str]:
    site = next(venv.glob("lib/python3*/site-packages"))
    return {p.name.split("-")[0].lower().replace("_", "-") for p in site.glob("*.dist-info")}


@pytest.fixture(scope="module")
def image() -> Iterator[InstalledImage]:
    yield from _installed(Containerfile.read(CONTAINERFILE))


@pytest.fixture(scope="module")
def worker_image() -> Iterator[InstalledImage]:
    """The worker target's own venv (its build stage's steps; its /app is the functions' image's), and its ENV."""
    worker = Containerfile.read(CONTAINERFILE, "worker")
    worker.install_steps = Containerfile.read(CONTAINERFILE, "build-worker").install_steps
    yield from _installed(worker)


def _installed(containerfile: Containerfile) -> Iterator[InstalledImage]:
    root = Path(tempfile.mkdtemp(prefix="eco2-image-"))
    root.chmod(0o755)  # tempfile makes it 0700: the functions' user must reach the venv and the code
    installed = InstalledImage(root, containerfile, root / "var" / "eco2")
    # This machine's environment (its package index and certificates), but no trace of the dev venv.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env |= {
        "UV": _uv(),
        "PYTHON": _image_python(),
    }
    try:
        for step in containerfile.install_steps:
            subprocess.run(
                ["bash", str(ROOT / "scripts/image/install.sh"), *map(installed.path, step)],
                cwd=ROOT,
                env=env,
                check=True,
                timeout=INSTALL_TIMEOUT,
            )
        installed.writable.mkdir(parents=True)
        installed.writable.chmod(0o777)
        workdir = Path(installed.path(containerfile.workdir))
        # Read-only to its owner too: no process may write beside the code (the worker's check has no /app).
        for directory in (workdir, *workdir.rglob("*")) if workdir.is_dir() else ():
            if directory.is_dir():
                directory.chmod(0o555)
        yield installed
    finally:
        for directory in root.rglob("*"):
            if directory.is_dir() and not directory.is_symlink():
                directory.chmod(stat.S_IRWXU | directory.stat().st_mode)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("target", ["functions", "worker"])
def test_the_containerfile_installs_only_through_the_checked_script(target: str) -> None:
    containerfile = Containerfile.read(CONTAINERFILE, target)
    steps = [step[:1] + step[2:] if step[0] == "wheel" else step[:1] for step in containerfile.install_steps]
    expected = [["wheel"], ["venv"], ["functions"]] + ([["wheel", "worker"], ["venv"]] if target == "worker" else [])
    assert steps == expected
    # Anything else a RUN line did would be an install step this check never runs.
    others = [c for c in containerfile.run_commands if not c.startswith("bash scripts/image/install.sh ")]
    uv = ["python3", "-m", "pip", "install"]
    assert [c.split()[:4] for c in others] == [uv] * (1 + (target == "worker")) + [
        ["rm", "-rf", "/usr/local/bin/pip*", "/usr/local/lib/python3*/site-packages/pip"],
        ["useradd", "--system", "--uid", "10001"],
    ]
    assert all(c.endswith('"uv>=0.5,<1"') for c in others if c.split()[:4] == uv), "pip installs uv, nothing else"
    assert containerfile.user.split(":")[0] not in ("", "0", "root")
    assert {"ECO2_ROOT", "PATH"} <= containerfile.env.keys()
    assert Containerfile.read(CONTAINERFILE).target == "functions", "a build without --target makes the functions"


def test_the_install_has_no_dev_tools_and_compiled_bytecode(image: InstalledImage) -> None:
    venv = Path(image.path("/opt/eco2"))
    site = next(venv.glob("lib/python3*/site-packages"))
    installed = installed_distributions(venv)
    assert "eco2" in installed
    assert not installed & {"pytest", "ruff", "mypy", "hypothesis", "schemathesis", "playwright", "uv", "pip"}
    assert not installed & (WORKER_ONLY | UNUSED_BY_SERVE), "the functions' image carries what they never load"
    assert list((site / "eco2").glob("__pycache__/*.pyc")), "the wheel's modules were not compiled"
    functions = Path(image.path(image.containerfile.env["ECO2_ROOT"])) / "functions"
    assert list(functions.glob("*/__pycache__/main.*.pyc")), "the functions were not compiled"


@pytest.fixture(scope="module")
def services() -> Manifests:
    return Manifests.load(ROOT)


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    metrics: str  # ECO2_METRICS_PORT's /metrics


# The functions run as nobody when the test runs as root (CI does); otherwise as the test's own user.
AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def started(
    image: InstalledImage, services: Manifests, standin: Child, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Started]]:
    """Every Service's command, all at once, as its pod would run it."""
    logs = tmp_path_factory.mktemp("image-logs")
    running: dict[str, Started] = {}
    try:
        for name, service in sorted(services.services.items()):
            port, metrics_port = free_port(), free_port()
            env = {
                **services.environment(name),
                **LOCAL_ENV,
                "OPENAI_BASE_URL": f"{standin.url}/v1",
                "ECO2_IMAGE_URL_ALLOWLIST": standin.url,
                "ECO2_IMAGE_URL_TRUSTED": standin.url,
                "DATABASE_URL": f"sqlite:///{image.writable / 'eco2.sqlite3'}",
                **image.env(),
                "HOME": "/nonexistent",  # the image's user has no home
                "PORT": str(port),
                "HOST": HOST,
                # Each pod has the manifest's metrics port to itself; here they share one host.
                "ECO2_METRICS_PORT": str(metrics_port),
            }
            program = shutil.which(service.command[0], path=env["PATH"])
            assert program is not None, f"{service.command[0]} is not on the image's PATH {env['PATH']}"
            log = logs / f"{name}.log"
            with log.open("wb") as log_file:
                process = subprocess.Popen(
                    [program, *service.command[1:]],
                    cwd=image.path(image.containerfile.workdir),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                    user=NOBODY if AS_ROOT else None,
                    group=NOBODY if AS_ROOT else None,
                    extra_groups=[] if AS_ROOT else None,
                )
            running[name] = Started(process, f"http://{HOST}:{port}", log, f"http://{HOST}:{metrics_port}/metrics")
        yield running
    finally:
        for child in running.values():
            child.process.terminate()
        for child in running.values():
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(timeout=10)


def _first_request(
    http: httpx.AsyncClient, function: str, url: str, standin_url: str
) -> Callable[[], Awaitable[httpx.Response]]:
    event = event_for(function, f"image-check-{uuid.uuid4().hex}", standin_url)
    if event is None:
        return lambda: http.get(f"{url}/healthz")
    headers, body = to_binary(event)
    return lambda: http.post(f"{url}/", headers=dict(headers), content=body)


FUNCTIONS = sorted(path.parent.name for path in (ROOT / "functions").glob("*/main.py"))


@pytest.mark.parametrize("function", FUNCTIONS)
async def test_every_function_starts_from_the_image_and_answers(
    function: str, started: dict[str, Started], services: Manifests, standin: Child
) -> None:
    child = started[function]
    readiness = services.services[function].readiness_path
    async with httpx.AsyncClient(timeout=30) as http:
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await first_2xx(child.process, lambda: http.get(f"{child.url}{readiness}"))
                await first_2xx(child.process, _first_request(http, function, child.url, standin.url))
        except Exception as exc:
            pytest.fail(f"{function}: {exc!r}\n{child.log.read_text(errors='replace')[-3000:]}")
        # The metrics answer on their own port (authz keeps none), and the public port has no /metrics (authz
        # answers every path as the ext-authz check of a request to it: 401, no token).
        scraped = await http.get(child.metrics)
        assert scraped.status_code == 200
        expected = {"authz": "", "gateway": "eco2_gateway_accept_seconds"}.get(function, f'function="{function}"')
        assert expected in scraped.text
        public = await http.get(f"{child.url}/metrics")
        assert public.status_code == (401 if function == "authz" else 404)
        assert "eco2_" not in public.text
    assert child.process.poll() is None
    if AS_ROOT:  # the function really ran as nobody: real, effective, saved and filesystem uid
        uids = next(
            line
            for line in Path(f"/proc/{child.process.pid}/status").read_text().splitlines()
            if line.startswith("Uid:")
        )
        assert set(uids.split()[1:]) == {str(NOBODY)}


def test_the_worker_target_carries_the_celery_stack_and_its_command_runs(worker_image: InstalledImage) -> None:
    venv = Path(worker_image.path("/opt/eco2"))
    installed = installed_distributions(venv)
    assert {"eco2", *WORKER_ONLY} <= installed
    assert not installed & UNUSED_BY_SERVE
    env = {**worker_image.env(), "HOME": "/nonexistent"}
    done = subprocess.run(
        [str(venv / "bin" / "eco2"), "worker", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--celery" in done.stdout + done.stderr


def test_the_functions_image_says_where_the_worker_mode_is(image: InstalledImage) -> None:
    eco2 = Path(image.path("/opt/eco2")) / "bin" / "eco2"
    env = {**image.env(), "HOME": "/nonexistent"}
    done = subprocess.run(
        [str(eco2), "worker", "--celery"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "--target worker" in done.stderr
    assert "Traceback" not in done.stderr
