"""When a lost link is replaced, and when the client gives up instead."""

from __future__ import annotations

import pytest

from tidings.protocol.lime import Reason, ReasonCode, SessionEnded, SessionState
from tidings.sdk import ConnectionLost, SessionFailed
from tidings.sdk._reconnect import PERMANENT_SESSION_FAILURES, stop_reason


def failed(code: int) -> SessionEnded:
    return SessionEnded(SessionState.FAILED, Reason(code=code, description="why"))


def test_a_plain_drop_or_a_passing_failure_is_retried() -> None:
    assert stop_reason(reconnect=True, ended=None) is None
    assert stop_reason(reconnect=True, ended=failed(ReasonCode.SESSION_ERROR)) is None
    assert stop_reason(reconnect=True, ended=SessionEnded(SessionState.FINISHED, None)) is None


@pytest.mark.parametrize("code", sorted(PERMANENT_SESSION_FAILURES))
def test_permanent_failures_stop_with_their_reason(code: int) -> None:
    error = stop_reason(reconnect=True, ended=failed(code))
    assert isinstance(error, SessionFailed)
    assert (error.code, error.description) == (code, "why")


def test_without_reconnect_any_loss_stops() -> None:
    assert isinstance(stop_reason(reconnect=False, ended=None), ConnectionLost)


def test_the_permanent_reasons_are_the_documented_ones() -> None:
    assert {int(code) for code in PERMANENT_SESSION_FAILURES} == {12, 13, 25, 31, 32, 35}
