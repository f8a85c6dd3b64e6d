"""Server text frames built for corked writes (real clients parse them in the integration
and conformance suites; this pins the header layout of RFC 6455 section 5.2)."""

from __future__ import annotations

import pytest

from tidings.gateway.framing import text_frame_header


@pytest.mark.parametrize("length", [0, 1, 125, 126, 300, 65535, 65536, 70000])
def test_header_encodes_fin_text_and_length(length: int):
    header = text_frame_header(length)
    assert header[0] == 0x81  # FIN + text opcode, unmasked
    if length < 126:
        assert header[1] == length and len(header) == 2
    elif length < 65536:
        assert header[1] == 126 and int.from_bytes(header[2:4], "big") == length
    else:
        assert header[1] == 127 and int.from_bytes(header[2:10], "big") == length
