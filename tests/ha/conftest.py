"""HA sets of the tests' own (eco2_tools.ha), on free ports in temporary directories, stopped after the module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eco2_tools.ha.cluster import HaSet, on_free_ports


@pytest.fixture(scope="module")
def ha_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaSet]:
    """A Redis primary, a replica and three Sentinels."""
    ha = on_free_ports(tmp_path_factory.mktemp("ha"), ("redis",))
    ha.up()
    try:
        yield ha
    finally:
        ha.down()


@pytest.fixture(scope="module")
def rabbit_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaSet]:
    """Three clustered RabbitMQ nodes (about 40 s to start on a loaded machine)."""
    ha = on_free_ports(tmp_path_factory.mktemp("rabbit"), ("rabbit",))
    ha.up()
    try:
        yield ha
    finally:
        ha.down()
