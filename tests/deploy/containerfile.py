"""The Containerfile read as the image check needs it: its install steps, and the final stage's ENV and WORKDIR.

The check runs the very `scripts/image/install.sh` calls the Containerfile's RUN lines make, with the image's
absolute paths moved under a temporary directory, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_SCRIPT = "scripts/image/install.sh"


@dataclass
class Containerfile:
    install_steps: list[list[str]] = field(default_factory=list)  # install.sh's arguments, in build order
    run_commands: list[str] = field(default_factory=list)  # every command of every RUN (split on &&)
    env: dict[str, str] = field(default_factory=dict)  # ENV of the final stage
    workdir: str = "/"  # WORKDIR of the final stage
    user: str = ""  # USER of the final stage

    @classmethod
    def read(cls, path: Path) -> Containerfile:
        parsed = cls()
        for keyword, rest in _instructions(path.read_text(encoding="utf-8")):
            if keyword == "FROM":  # a new stage: only the last one's settings are the image's
                parsed.env, parsed.workdir, parsed.user = {}, "/", ""
            elif keyword == "RUN":
                parsed.run_commands += [command.strip() for command in rest.split("&&")]
                parsed.install_steps += _install_calls(rest)
            elif keyword == "ENV":
                parsed.env.update(_env_pairs(rest, parsed.env))
            elif keyword == "WORKDIR":
                parsed.workdir = rest.strip()
            elif keyword == "USER":
                parsed.user = rest.strip()
        return parsed


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


def _env_pairs(line: str, earlier: dict[str, str]) -> dict[str, str]:
    """`ENV A=1 B=$A:x`: $NAME expands to an earlier ENV of the stage, else stays as written."""
    pairs: dict[str, str] = {}
    for word in shlex.split(line):
        name, _, value = word.partition("=")
        for known, known_value in {**earlier, **pairs}.items():
            value = value.replace(f"${known}", known_value)
        pairs[name] = value
    return pairs
