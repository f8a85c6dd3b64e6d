"""Settings validate where they are made: a bad value names itself."""

from __future__ import annotations

import pytest

from tidings.config import ConfigError, Settings
from tidings.wiring import offer_url


@pytest.mark.parametrize(
    "url", ["ftp://x", "example.com", "https://x/?a=1", "https://x/#f", "http://a b", "h" * 3000]
)
def test_a_public_url_must_be_a_plain_http_url(url):
    with pytest.raises(ConfigError, match="public_url"):
        Settings(public_url=url)


def test_capability_urls_use_the_public_url_when_set():
    settings = Settings(public_url="https://chat.example.com/")
    url = offer_url(lambda: settings.public_url or "http://127.0.0.1:8766")
    assert url("tok") == "https://chat.example.com/consent/offers/tok"
