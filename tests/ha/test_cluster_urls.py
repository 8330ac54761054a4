"""The cluster forms of AMQP_URL (several nodes) and of the Celery result backend (Redis behind Sentinel)."""

from __future__ import annotations

import pytest

from eco2.amqp_cluster import amqp_addresses, kombu_url
from eco2.celery_runtime.config import celery_result_backend
from eco2.env import SettingsError
from eco2_tools.local.dependencies import without_password

NODES = "amqp://u:p@rabbit-0:5672/, amqp://u:p@rabbit-1:5672/,amqp://u:p@rabbit-2:5672/"


def test_an_amqp_url_lists_its_nodes_in_order_and_one_url_is_one_node() -> None:
    assert amqp_addresses(NODES) == [f"amqp://u:p@rabbit-{n}:5672/" for n in range(3)]
    assert amqp_addresses("amqp://guest:guest@127.0.0.1:5672/") == ["amqp://guest:guest@127.0.0.1:5672/"]


def test_celery_gets_the_same_nodes_as_kombus_failover_list() -> None:
    assert kombu_url(NODES) == ";".join(f"amqp://u:p@rabbit-{n}:5672/" for n in range(3))


@pytest.mark.parametrize("bad", ["", " , ", "amqp://a/,amqps://b/", "redis://a/"])
def test_an_empty_list_mixed_schemes_or_another_scheme_are_settings_errors(bad: str) -> None:
    with pytest.raises(SettingsError):
        amqp_addresses(bad)


def test_the_celery_result_backend_behind_sentinel_is_celerys_own_sentinel_form() -> None:
    backend, options = celery_result_backend("redis+sentinel://:pw@s1:26379,s2:26380/eco2/3?sentinel_password=sp")
    assert backend == "sentinel://:pw@s1:26379/3;sentinel://:pw@s2:26380/3"
    assert options == {"master_name": "eco2", "sentinel_kwargs": {"password": "sp"}}
    assert celery_result_backend("redis://127.0.0.1:6379/0") == ("redis://127.0.0.1:6379/0", {})


def test_every_node_of_a_list_is_shown_without_its_password() -> None:
    shown = without_password("amqp://u:secret@rabbit-0:5672/,amqp://u:secret@rabbit-1:5672/")
    assert shown == "amqp://u:***@rabbit-0:5672/,amqp://u:***@rabbit-1:5672/"
