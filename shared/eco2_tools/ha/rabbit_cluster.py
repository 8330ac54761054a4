"""Three RabbitMQ nodes clustered on one machine, on their own ports, beside (never touching) the machine's own node.

Each node is Debian's RabbitMQ run directly (/usr/lib/rabbitmq/bin: no switch to the rabbitmq user) with every
path in the set's directory: its own config (only its listener, classic peer discovery of the other two, the
management plugin off), its own env file (so /etc/rabbitmq's NODENAME and listener are never read), its own
Mnesia and logs, and one Erlang cookie shared by the three (and by rabbitmqctl run through `ctl`). Node names
carry the set's AMQP port, so two sets (a test's and a developer's) never share a name on the machine's epmd.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from eco2_tools.ha.supervision import SetError, kill, start, wait_until

NODES = 3
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
START_SECONDS = 120.0
# Well above what a test publishes; an alarm is raised on purpose (set_vm_memory_high_watermark), never by accident.
MEMORY_WATERMARK = 0.2


@dataclass(frozen=True)
class RabbitCluster:
    directory: Path
    amqp_port: int  # nodes on amqp_port .. amqp_port + 2
    dist_port: int  # Erlang distribution on dist_port .. dist_port + 2

    def node(self, index: int) -> str:
        return f"eco2ha{self.amqp_port}-{index}@localhost"

    def port(self, index: int) -> int:
        return self.amqp_port + index

    def url(self, index: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port(index)}/"

    def urls(self) -> str:
        """AMQP_URL for the cluster: every node, comma-separated (eco2.amqp_cluster)."""
        return ",".join(self.url(index) for index in range(NODES))

    @property
    def home(self) -> Path:
        return self.directory / "rabbit-home"

    def up(self) -> None:
        if not (RABBIT_BIN / "rabbitmq-server").is_file():
            raise SetError("RabbitMQ is not installed (Debian: apt-get install rabbitmq-server)")
        self.home.mkdir(exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(os.urandom(16).hex())
        cookie.chmod(0o400)
        (self.directory / "rabbitmq-env.conf").write_text("")
        (self.directory / "enabled_plugins").write_text("[].\n")
        for index in range(NODES):
            base = self.directory / f"rabbit-{index}"
            base.mkdir(exist_ok=True)
            (base / "rabbitmq.conf").write_text(self._config(index))
            start(self.directory, f"rabbit-{index}", [str(RABBIT_BIN / "rabbitmq-server")], env=self._env(index))
        for index in range(NODES):
            wait_until(partial(self._running, index), seconds=START_SECONDS, what=self.node(index))
        wait_until(self._clustered, seconds=START_SECONDS, what="the RabbitMQ cluster")

    def _config(self, index: int) -> str:
        peers = [f"cluster_formation.classic_config.nodes.{n + 1} = {self.node(n)}" for n in range(NODES)]
        return "\n".join(
            [
                f"listeners.tcp.1 = 127.0.0.1:{self.port(index)}",
                "cluster_formation.peer_discovery_backend = classic_config",
                *peers,
                f"vm_memory_high_watermark.relative = {MEMORY_WATERMARK}",
                "disk_free_limit.absolute = 50MB",
                "log.console = false",
                "",
            ]
        )

    def _env(self, index: int) -> dict[str, str]:
        base = self.directory / f"rabbit-{index}"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.node(index),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port(index)),
            "RABBITMQ_DIST_PORT": str(self.dist_port + index),
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # Erlang distribution on the loopback only, as the machine's own node.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def ctl(self, index: int, *arguments: str, timeout: float = 60.0) -> str:
        """rabbitmqctl against this set's node `index` (never the machine's own node)."""
        completed = subprocess.run(  # noqa: S603 (RabbitMQ's own tool, arguments from this module: no shell)
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node(index), *arguments],
            env=self._env(index),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0:
            raise SetError(f"rabbitmqctl {' '.join(arguments)} on {self.node(index)}: {completed.stderr.strip()}")
        return completed.stdout

    def _running(self, index: int) -> bool:
        try:
            self.ctl(index, "await_startup", "--timeout", "5", timeout=30)
        except (SetError, subprocess.TimeoutExpired):
            return False
        return True

    def _clustered(self) -> bool:
        try:
            status = self.ctl(0, "cluster_status", "--formatter", "json")
        except SetError:
            return False
        return all(self.node(index) in status.split('"running_nodes"')[-1] for index in range(NODES))

    def kill_node(self, index: int) -> bool:
        """SIGKILL one node (a fault)."""
        return kill(self.directory, f"rabbit-{index}", signal.SIGKILL)

    def restart_node(self, index: int) -> None:
        """Start a killed node again (as its pod would be restarted); return once it runs, back in the cluster."""
        start(self.directory, f"rabbit-{index}", [str(RABBIT_BIN / "rabbitmq-server")], env=self._env(index))
        wait_until(partial(self._running, index), seconds=START_SECONDS, what=self.node(index))
        wait_until(self._clustered, seconds=START_SECONDS, what="the RabbitMQ cluster")

    def raise_memory_alarm(self, index: int) -> None:
        """Every publisher of node `index` blocked (RabbitMQ's memory alarm, on this set's node only)."""
        self.ctl(index, "set_vm_memory_high_watermark", "0.0000001")

    def clear_memory_alarm(self, index: int) -> None:
        self.ctl(index, "set_vm_memory_high_watermark", str(MEMORY_WATERMARK))
