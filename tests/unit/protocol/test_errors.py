"""One error root for the protocol layer: ``except ProtocolError`` catches whatever it raises."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import tidings.protocol
from tidings.protocol import (
    InvalidState,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    feedme,
    lime,
)


def public_packages() -> list[ModuleType]:
    """``tidings.protocol`` and every public package under it, found rather than listed."""
    found = [tidings.protocol]
    for info in pkgutil.walk_packages(tidings.protocol.__path__, "tidings.protocol."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(importlib.import_module(info.name))
    return found


def exported_exceptions() -> list[tuple[str, type[BaseException]]]:
    return [
        (f"{module.__name__}.{name}", value)
        for module in public_packages()
        for name in module.__all__
        if isinstance(value := getattr(module, name), type) and issubclass(value, BaseException)
    ]


def test_every_public_protocol_package_is_seen() -> None:
    names = {module.__name__ for module in public_packages()}
    assert {"tidings.protocol", "tidings.protocol.lime", "tidings.protocol.feedme"} <= names


@pytest.mark.parametrize(("name", "exception"), exported_exceptions())
def test_every_exported_exception_is_a_protocol_error(
    name: str, exception: type[BaseException]
) -> None:
    assert issubclass(exception, ProtocolError), name


def test_the_sides_are_kept() -> None:
    assert issubclass(feedme.LocalProtocolError, LocalProtocolError)
    assert issubclass(feedme.InvalidState, InvalidState)
    assert issubclass(feedme.RemoteProtocolError, RemoteProtocolError)
    assert issubclass(lime.EnvelopeError, RemoteProtocolError)
    assert issubclass(lime.InvalidNode, RemoteProtocolError)
    assert not issubclass(feedme.RemoteProtocolError, LocalProtocolError)


def test_errors_keep_their_hints() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        lime.decode_envelope(b'{"id": "m", "to": 3, "type": "text/plain", "content": 1}')
    assert isinstance(caught.value, lime.EnvelopeError)
    assert caught.value.reason.code == lime.ReasonCode.VALIDATION_ERROR
    assert caught.value.kind is lime.Message and caught.value.envelope_id == "m"

    with pytest.raises(RemoteProtocolError) as violation:
        feedme.decode_client_message("{}")
    assert isinstance(violation.value, feedme.RemoteProtocolError)
    assert violation.value.case is feedme.ViolationCase.INVALID_MESSAGE
    assert violation.value.diagnostics["Problem"] == feedme.ViolationCase.INVALID_MESSAGE.value


def test_value_errors_stay_value_errors() -> None:
    """Callers that parse with ``except ValueError`` keep working."""
    with pytest.raises(ValueError):
        lime.parse_node("no-domain")
    assert issubclass(feedme.DeltaError, ValueError)
