"""Every error id has an HTTP status, a LIME reason code, and a row in docs/http.md that says
both: the three must not drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tidings.api.problems import HTTP_STATUS
from tidings.core.errors import ErrorId
from tidings.gateway.errors import LIME_REASON

DOC = (Path(__file__).parents[2] / "docs" / "http.md").read_text()


@pytest.mark.parametrize("error_id", list(ErrorId))
def test_each_error_id_is_mapped_and_documented(error_id: ErrorId) -> None:
    row = re.search(rf"^\| `{re.escape(error_id.value)}` \| (\d+) \| (\d+) \|", DOC, re.M)
    assert row is not None, f"{error_id.value} has no row in docs/http.md"
    assert int(row.group(1)) == HTTP_STATUS[error_id]
    assert int(row.group(2)) == int(LIME_REASON[error_id])


CONSENT_DOC = (Path(__file__).parents[2] / "docs" / "consent.md").read_text()


@pytest.mark.parametrize("error_id", [e for e in ErrorId if e.value.startswith("cmc-")])
def test_each_consent_error_id_is_in_the_consent_doc(error_id: ErrorId) -> None:
    row = re.search(rf"^\| `{re.escape(error_id.value)}` \| (\d+) \| (\d+) \|", CONSENT_DOC, re.M)
    assert row is not None, f"{error_id.value} has no row in docs/consent.md"
    assert int(row.group(1)) == HTTP_STATUS[error_id]
    assert int(row.group(2)) == int(LIME_REASON[error_id])
