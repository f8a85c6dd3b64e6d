"""The admin token's setting and the settings as the admin API shows them."""

from __future__ import annotations

import pytest

from tidings.config import ConfigError, Settings


def test_admin_token_must_differ_from_api_token() -> None:
    with pytest.raises(ConfigError, match="admin_token"):
        Settings(api_token="same", admin_token="same")
    assert Settings(admin_token="a", api_token="b").admin_token == "a"


def test_redacted_hides_tokens_and_passwords_in_urls() -> None:
    settings = Settings(
        api_token="api-secret",
        admin_token="admin-secret",
        store="postgresql://tidings:db-secret@db.example:5432/tidings",
        broker="redis://:redis-secret@cache.example:6379/0",
    )
    shown = settings.redacted()
    text = repr(shown)
    for secret in ("api-secret", "admin-secret", "db-secret", "redis-secret"):
        assert secret not in text
    assert shown["api_token"] == shown["admin_token"] == "***"
    assert shown["store"] == "postgresql://tidings:***@db.example:5432/tidings"
    assert shown["broker"] == "redis://:***@cache.example:6379/0"
    assert shown["data_dir"] == "tidings-data" and shown["queue_limit"] == 10_000


def test_unset_tokens_show_as_empty() -> None:
    shown = Settings().redacted()
    assert shown["api_token"] == "" and shown["admin_token"] == ""
