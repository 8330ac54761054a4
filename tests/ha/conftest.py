"""An HA set of the tests' own (eco2_tools.ha), on free ports in a temporary directory, stopped after the module."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from eco2_tools.ha.cluster import HaSet


def free_block(size: int) -> int:
    """The first of `size` consecutive free local ports (the set numbers its servers from a base)."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        if all(_free(port) for port in range(base, base + size)):
            return base
    raise RuntimeError(f"no {size} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def ha_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaSet]:
    base = free_block(5)
    ha = HaSet(tmp_path_factory.mktemp("ha"), redis_port=base, sentinel_port=base + 2, parts=("redis",))
    ha.up()
    try:
        yield ha
    finally:
        ha.down()


@pytest.fixture(scope="module")
def rabbit_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaSet]:
    """Three clustered RabbitMQ nodes of the tests' own (about a minute to start on a loaded machine)."""
    amqp, dist = free_block(3), free_block(3)
    ha = HaSet(tmp_path_factory.mktemp("rabbit"), amqp_port=amqp, dist_port=dist, parts=("rabbit",))
    ha.up()
    try:
        yield ha
    finally:
        ha.down()
