"""Redis under Sentinel on one machine: a primary, a replica and three Sentinels (quorum 2) on their own ports.

Debian's redis-server runs every part (`redis-server <conf> --sentinel` is a Sentinel). Nothing is written
outside the set's directory: no RDB or AOF file, and each Sentinel rewrites only its own config there.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import redis

from eco2_tools.ha.supervision import SetError, kill, owned, recorded, start, wait_until

MASTER_NAME = "eco2"
SENTINELS = 3
# A primary silent for this long is down to a Sentinel; with quorum 2 of 3 the promotion follows within seconds.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
START_SECONDS = 30.0


@dataclass(frozen=True)
class RedisSet:
    directory: Path
    base_port: int  # primary, replica = base + 1; Sentinels on sentinel_port .. sentinel_port + 2
    sentinel_port: int

    @property
    def data_ports(self) -> tuple[int, int]:
        return self.base_port, self.base_port + 1

    @property
    def sentinel_ports(self) -> tuple[int, ...]:
        return tuple(self.sentinel_port + index for index in range(SENTINELS))

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/{db}"

    def up(self) -> None:
        program = _program()
        primary, replica = self.data_ports
        self._server("redis-primary", program, primary)
        self._server("redis-replica", program, replica, "--replicaof", "127.0.0.1", str(primary))
        wait_until(lambda: _replica_linked(replica), seconds=START_SECONDS, what="the Redis replica's link")
        for index, port in enumerate(self.sentinel_ports):
            config = self.directory / f"sentinel-{index}.conf"
            config.write_text(_sentinel_config(port, primary))
            start(self.directory, f"redis-sentinel-{index}", [program, str(config), "--sentinel"])
        wait_until(self._sentinels_agree, seconds=START_SECONDS, what="the Sentinels' view of the set")

    def _server(self, name: str, program: str, port: int, *extra: str) -> None:
        start(
            self.directory,
            name,
            [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--dbfilename", f"{name}.rdb", *extra],
        )  # fmt: skip

    def _sentinels_agree(self) -> bool:
        """Every Sentinel sees the master, its replica and the two other Sentinels."""

        def complete(client: redis.Redis) -> bool:
            state = cast(dict[str, Any], client.sentinel_master(MASTER_NAME))
            return int(state.get("num-slaves", 0)) >= 1 and int(state.get("num-other-sentinels", 0)) >= SENTINELS - 1

        return self._every_sentinel(complete)

    def _every_sentinel(self, check: Callable[[redis.Redis], bool]) -> bool:
        """`check` holds on every Sentinel (False as soon as one fails it or does not answer)."""
        for port in self.sentinel_ports:
            try:
                with _client(port) as client:
                    if not check(client):
                        return False
            except redis.RedisError:
                return False
        return True

    def master_port(self) -> int | None:
        """The port the Sentinels name as the master now (None while none answers)."""
        named = [port for port in self.masters_named() if port is not None]
        return named[0] if named else None

    def masters_named(self) -> list[int | None]:
        """The master's port as each Sentinel names it (None for one that does not answer)."""
        named: list[int | None] = []
        for port in self.sentinel_ports:
            try:
                with _client(port) as client:
                    address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                address = None
            named.append(int(address[1]) if address else None)
        return named

    def revive(self) -> None:
        """Restart a killed data server as a replica of the current master; return once it is linked and every
        Sentinel counts it as a healthy replica again (the set can take another failover)."""
        master = self.master_port()
        if master is None:
            raise SetError("no Sentinel names a master")
        for name, port in zip(("redis-primary", "redis-replica"), self.data_ports, strict=True):
            if port != master and not owned(recorded(self.directory).get(name, 0), self.directory):
                self._server(name, _program(), port, "--replicaof", "127.0.0.1", str(master))
                wait_until(partial(_replica_linked, port), seconds=START_SECONDS, what=f"{name}'s link")
        wait_until(self._replica_healthy, seconds=START_SECONDS, what="the Sentinels' view of the revived replica")

    def _replica_healthy(self) -> bool:
        """Every Sentinel counts a replica that is not down."""

        def healthy(client: redis.Redis) -> bool:
            return any("s_down" not in str(replica.get("flags")) for replica in client.sentinel_slaves(MASTER_NAME))

        return self._every_sentinel(healthy)

    def replica_name(self) -> str:
        """The recorded name of the server that is the replica now."""
        return "redis-replica" if self.master_port() == self.base_port else "redis-primary"

    def kill_master(self) -> int:
        """SIGKILL the current master (a fault); its port."""
        port = self.master_port()
        if port is None:
            raise SetError("no Sentinel names a master")
        name = "redis-primary" if port == self.base_port else "redis-replica"
        kill(self.directory, name, signal.SIGKILL)
        return port


def _program() -> str:
    program = shutil.which("redis-server")
    if program is None:
        raise SetError("redis-server is not installed (Debian: apt-get install redis-server)")
    return program


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)


def _replica_linked(port: int) -> bool:
    try:
        with _client(port) as client:
            return bool(client.info("replication").get("master_link_status") == "up")
    except redis.RedisError:
        return False


def _sentinel_config(port: int, primary: int) -> str:
    return "\n".join(
        [
            f"port {port}",
            "bind 127.0.0.1",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
            "",
        ]
    )
