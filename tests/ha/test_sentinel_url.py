"""The redis+sentinel:// URL form: what it names, and a clear SettingsError for what it cannot."""

from __future__ import annotations

import pytest

from eco2.env import SettingsError
from eco2.redis_sentinel import SentinelUrl, failover_retries, is_sentinel_url


def test_a_sentinel_url_names_its_sentinels_master_database_and_credentials() -> None:
    url = SentinelUrl.parse("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/mymaster/4?sentinel_password=sp")
    assert url.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (url.master, url.db, url.password, url.sentinel_password, url.tls) == ("mymaster", 4, "s3cret", "sp", False)


def test_a_sentinel_without_port_is_on_26379_and_the_database_defaults_to_0() -> None:
    url = SentinelUrl.parse("rediss+sentinel://sentinel.redis.svc/eco2")
    assert (url.sentinels, url.db, url.tls) == ((("sentinel.redis.svc", 26379),), 0, True)


def test_the_described_url_carries_no_password() -> None:
    described = SentinelUrl.parse("redis+sentinel://u:pw@h:1/m/2?sentinel_password=x").describe()
    assert described == "redis+sentinel://h:1/m/2"


@pytest.mark.parametrize(
    "bad", ["redis+sentinel://h:26379", "redis+sentinel://h:port/m", "redis+sentinel://h:1/m/zero"]
)
def test_a_sentinel_url_without_a_master_or_with_a_bad_number_is_a_settings_error(bad: str) -> None:
    with pytest.raises(SettingsError):
        SentinelUrl.parse(bad)


def test_only_the_sentinel_schemes_are_sentinel_urls() -> None:
    assert is_sentinel_url("redis+sentinel://h/m")
    assert is_sentinel_url("rediss+sentinel://h/m")
    assert not is_sentinel_url("redis://h:6379/0")


def test_the_reconnects_span_the_failover_wait() -> None:
    assert failover_retries(30.0) * 0.5 >= 30.0
