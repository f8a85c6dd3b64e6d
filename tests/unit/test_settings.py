"""Settings validate where they are made: a bad value names itself."""

from __future__ import annotations

import pytest

from tidings.config import ConfigError, Settings, without_password
from tidings.wiring import http_base, offer_url


@pytest.mark.parametrize(
    "url", ["ftp://x", "example.com", "https://x/?a=1", "https://x/#f", "http://a b", "h" * 3000]
)
def test_a_public_url_must_be_a_plain_http_url(url):
    with pytest.raises(ConfigError, match="public_url"):
        Settings(public_url=url)


def test_capability_urls_use_the_public_url_when_set():
    public = Settings(public_url="https://chat.example.com/")
    assert offer_url(lambda: http_base(public, 8766))("tok") == (
        "https://chat.example.com/consent/offers/tok"
    )
    local = Settings(host="127.0.0.1")
    assert offer_url(lambda: http_base(local, 40001))("tok") == (
        "http://127.0.0.1:40001/consent/offers/tok"
    )


@pytest.mark.parametrize(
    "store",
    ["sqlite", "memory", "postgresql://tidings@127.0.0.1:5432/tidings", "postgres://u:p@db/x"],
)
def test_a_store_is_sqlite_memory_or_a_postgresql_url(store):
    assert Settings(store=store).store == store


@pytest.mark.parametrize(
    "store", ["", "SQLite", "mysql://db/x", "postgresql://", "postgresql://a b/c", "redis://x"]
)
def test_any_other_store_is_refused_by_name(store):
    with pytest.raises(ConfigError, match="'store' must be 'sqlite', 'memory' or a postgresql"):
        Settings(store=store)


@pytest.mark.parametrize("broker", ["in-process", "redis://127.0.0.1:6379/0", "rediss://h/1"])
def test_a_broker_is_in_process_or_a_redis_url(broker):
    assert Settings(broker=broker).broker == broker


@pytest.mark.parametrize("broker", ["", "inprocess", "redis://", "amqp://x", "http://h"])
def test_any_other_broker_is_refused_by_name(broker):
    with pytest.raises(ConfigError, match="'broker' must be 'in-process' or a redis://"):
        Settings(broker=broker)


@pytest.mark.parametrize("node_id", ["a b", "x\n", "n" * 201])
def test_a_node_id_is_short_and_without_spaces(node_id):
    with pytest.raises(ConfigError, match="'node_id'"):
        Settings(node_id=node_id)


def test_node_id_defaults_to_host_and_port():
    assert Settings(host="10.0.0.5").resolved_node_id(9000) == "10.0.0.5:9000"
    assert Settings(node_id="node7").resolved_node_id(9000) == "node7"
    anywhere = Settings(host="0.0.0.0").resolved_node_id(9000)
    assert anywhere.endswith(":9000") and not anywhere.startswith("0.0.0.0")


PG = "postgresql://tidings@db/tidings"
REDIS = "redis://cache:6379/0"


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path):
    config = tmp_path / "tidings.toml"
    config.write_text('store = "memory"\nbroker = "in-process"\nnode-id = "from-file"\n')
    assert Settings.load(None, environ={}).store == "sqlite"
    from_file = Settings.load(config, environ={})
    assert (from_file.store, from_file.broker, from_file.node_id) == (
        "memory",
        "in-process",
        "from-file",
    )
    environ = {"TIDINGS_STORE": PG, "TIDINGS_BROKER": REDIS, "TIDINGS_NODE_ID": "from-env"}
    from_env = Settings.load(config, environ=environ)
    assert (from_env.store, from_env.broker, from_env.node_id) == (PG, REDIS, "from-env")
    flagged = Settings.load(config, environ=environ, store="sqlite", node_id="from-flag")
    assert (flagged.store, flagged.broker, flagged.node_id) == ("sqlite", REDIS, "from-flag")
    assert Settings.load(config, environ={"TIDINGS_STORE": ""}).store == "memory"  # empty: unset


def test_a_bad_environment_value_names_its_variable():
    with pytest.raises(ConfigError, match=r"'store' .* environment variable TIDINGS_STORE"):
        Settings.load(None, environ={"TIDINGS_STORE": "mysql://x/y"})


def test_several_nodes_need_a_postgresql_store():
    for store in ("sqlite", "memory"):
        with pytest.raises(ConfigError, match="several nodes.*'store' is '" + store):
            Settings(store=store, broker=REDIS).check_serveable()
    Settings(store=PG, broker=REDIS).check_serveable()
    Settings(store=PG).check_serveable()  # one node on PostgreSQL is fine
    Settings().check_serveable()


def test_urls_lose_their_password_in_messages():
    assert without_password("redis://user:secret@h:6379/0") == "redis://user:***@h:6379/0"
    assert without_password("postgresql://:secret@h/db") == "postgresql://:***@h/db"
    assert without_password(REDIS) == REDIS


def test_open_broker_refuses_redis_on_sqlite_and_opens_redis_on_postgresql():
    from tidings.broker.redis import RedisBroker
    from tidings.wiring import open_broker

    with pytest.raises(ConfigError, match="several nodes"):
        open_broker(Settings(broker=REDIS))
    broker = open_broker(Settings(store=PG, broker=REDIS, ws_port=9100))
    assert isinstance(broker, RedisBroker)
    assert broker.node_id == "127.0.0.1:9100"
    assert open_broker(Settings(store=PG, broker=REDIS), "node2").node_id == "node2"
