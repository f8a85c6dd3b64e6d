"""Settings validate where they are made: a bad value names itself."""

from __future__ import annotations

import pytest

from tidings.config import ConfigError, Settings
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
