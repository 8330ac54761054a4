"""The whole HA set in one directory: what runs there (set.json), brought up and torn down as one."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from eco2_tools.ha.rabbit_cluster import RabbitCluster
from eco2_tools.ha.redis_set import RedisSet
from eco2_tools.ha.supervision import SetError, stop_all

SET_FILE = "set.json"
# Clear of the machine's own Redis (6379, Sentinel's default 26379) and RabbitMQ (5672, 25672, management 15672).
DEFAULT_REDIS_PORT = 16379
DEFAULT_SENTINEL_PORT = 26390
DEFAULT_AMQP_PORT = 15680
DEFAULT_DIST_PORT = 25690
PARTS = ("redis", "rabbit")


def free_block(size: int) -> int:
    """The first of `size` consecutive free local ports (a set numbers its servers from a base): a test's or a
    fault run's set beside the default one."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        if all(_free(port) for port in range(base, base + size)):
            return base
    raise SetError(f"no {size} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def on_free_ports(directory: Path, parts: tuple[str, ...] = PARTS) -> HaSet:
    """A set (not started) in `directory` on free ports."""
    redis, amqp, dist = free_block(5), free_block(3), free_block(3)
    return HaSet(directory, redis, redis + 2, amqp, dist, parts)


def default_directory() -> Path:
    return Path(os.environ.get("ECO2_HA_DIR") or Path(tempfile.gettempdir()) / f"eco2-ha-{os.getuid()}")


@dataclass(frozen=True)
class HaSet:
    directory: Path
    redis_port: int = DEFAULT_REDIS_PORT
    sentinel_port: int = DEFAULT_SENTINEL_PORT
    amqp_port: int = DEFAULT_AMQP_PORT
    dist_port: int = DEFAULT_DIST_PORT
    parts: tuple[str, ...] = PARTS

    @property
    def redis(self) -> RedisSet:
        return RedisSet(self.directory, self.redis_port, self.sentinel_port)

    @property
    def rabbit(self) -> RabbitCluster:
        return RabbitCluster(self.directory, self.amqp_port, self.dist_port)

    def environment(self) -> dict[str, str]:
        """The settings that point the pack at this set."""
        settings = {"REDIS_URL": self.redis.url(0)} if "redis" in self.parts else {}
        return settings | ({"AMQP_URL": self.rabbit.urls()} if "rabbit" in self.parts else {})

    def up(self) -> None:
        """Start every server; on any failure stop what started and leave nothing behind."""
        if (self.directory / SET_FILE).exists():
            raise SetError(f"a set already runs in {self.directory}: `down` it first")
        self.directory.mkdir(parents=True, exist_ok=True)
        saved = {name: value for name, value in asdict(self).items() if name != "directory"}
        (self.directory / SET_FILE).write_text(json.dumps(saved))
        try:
            if "redis" in self.parts:
                self.redis.up()
            if "rabbit" in self.parts:
                self.rabbit.up()
        except BaseException:
            self.down()
            raise

    def down(self) -> list[str]:
        """Stop every server of the set and remove its directory; the names stopped."""
        stopped = stop_all(self.directory) if self.directory.is_dir() else []
        shutil.rmtree(self.directory, ignore_errors=True)
        return stopped

    @classmethod
    def running(cls, directory: Path) -> HaSet | None:
        """The set recorded in `directory`, or None when none was brought up there."""
        path = directory / SET_FILE
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        return cls(directory, **{**saved, "parts": tuple(saved["parts"])})
