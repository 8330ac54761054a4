"""The Containerfile read as the image check needs it: per target, its install steps, ENV, WORKDIR and USER.

The check runs the very `scripts/image/install.sh` calls the Containerfile's RUN lines make, with the image's
absolute paths moved under a temporary directory, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_SCRIPT = "scripts/image/install.sh"


@dataclass
class Stage:
    name: str
    base: str  # an image, or an earlier stage's name
    install_steps: list[list[str]] = field(default_factory=list)  # install.sh's arguments, in order
    run_commands: list[str] = field(default_factory=list)  # every command of every RUN (split on &&)
    copies_from: list[str] = field(default_factory=list)  # the stages of its `COPY --from=`
    env: dict[str, str] = field(default_factory=dict)  # its own ENV, on top of its base stage's
    workdir: str | None = None
    user: str | None = None


@dataclass
class Containerfile:
    """One target's view: what it installs (its stages and those it copies from, in build order) and runs as."""

    target: str
    install_steps: list[list[str]] = field(default_factory=list)
    run_commands: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # ENV of the target, its base stages' included
    workdir: str = "/"
    user: str = ""

    @classmethod
    def read(cls, path: Path, target: str | None = None) -> Containerfile:
        """The `target` stage (by default the last one: what a build without --target makes)."""
        stages = read_stages(path)
        name = target or list(stages)[-1]
        view = cls(name)
        for stage in _build_order(stages, name):
            view.install_steps += stage.install_steps
            view.run_commands += stage.run_commands
        for stage in _chain(stages, name):
            view.env = _expand(stage.env, view.env)
            view.workdir = stage.workdir or view.workdir
            view.user = stage.user if stage.user is not None else view.user
        return view


def read_stages(path: Path) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for keyword, rest in _instructions(path.read_text(encoding="utf-8")):
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"stage-{len(stages)}"
            stage = stages[name] = Stage(name, words[0])
        elif stage is None:
            continue  # ARG before the first FROM
        elif keyword == "RUN":
            stage.run_commands += [command.strip() for command in rest.split("&&")]
            stage.install_steps += _install_calls(rest)
        elif keyword == "COPY" and rest.startswith("--from="):
            stage.copies_from.append(rest.split()[0].removeprefix("--from="))
        elif keyword == "ENV":
            stage.env.update(_pairs(rest))
        elif keyword == "WORKDIR":
            stage.workdir = rest.strip()
        elif keyword == "USER":
            stage.user = rest.strip()
    return stages


def _chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    chain: list[Stage] = []
    while name in stages:
        chain.insert(0, stages[name])
        name = stages[name].base
    return chain


def _build_order(stages: dict[str, Stage], name: str) -> list[Stage]:
    """Every stage the target needs (its bases and what it copies from, recursively), in file order."""
    needed: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in needed or current not in stages:
            continue
        needed.add(current)
        pending += [stages[current].base, *stages[current].copies_from]
    return [stage for stage_name, stage in stages.items() if stage_name in needed]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, backslash continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest))
        pending = ""
    return instructions


def _install_calls(run: str) -> list[list[str]]:
    """The arguments of every `bash scripts/image/install.sh ...` among the `&&`-joined commands of a RUN."""
    calls = []
    for command in run.split("&&"):
        words = shlex.split(command)
        if words[:2] == ["bash", INSTALL_SCRIPT]:
            calls.append(words[2:])
    return calls


def _pairs(line: str) -> dict[str, str]:
    """`ENV A=1 B=$A:x` as written."""
    return dict(word.partition("=")[::2] for word in shlex.split(line))


def _expand(own: dict[str, str], earlier: dict[str, str]) -> dict[str, str]:
    """A stage's ENV over its base's: $NAME expands to an earlier ENV, else stays as written."""
    result = dict(earlier)
    for name, value in own.items():
        for known, known_value in result.items():
            value = value.replace(f"${known}", known_value)
        result[name] = value
    return result
