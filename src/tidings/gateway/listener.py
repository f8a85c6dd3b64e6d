"""The WebSocket listener: one port, the protocol chosen by the subprotocol the client offers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy
from picows import (
    WSListener,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)

ListenerFactory = Callable[[WSUpgradeRequest, object], WSListener]
"""Makes the listener of an upgrade request; the second argument is the client's address."""


class Refused(Exception):
    """Raised by a listener factory to refuse the upgrade with an HTTP status and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_NO_HEADERS: Any = CIMultiDictProxy(CIMultiDict[str]())
"""Read-only (picows types the attribute as a CIMultiDict: read it, never write it)."""


def release_handshake(transport: WSTransport) -> None:
    """Let go of the upgrade's headers once the connection is up (``on_ws_connected``).

    picows keeps the upgrade request and its response on the transport for the connection's
    life (``transport.request``, ``transport.response``); their headers are the bulk of them
    (a multidict each, every name and value a string: 1-2 KB per idle connection, more with a
    browser's headers). Tidings reads them only while routing the upgrade, and picows only
    while answering it, both done by the time the listener is connected: they are replaced by
    one shared empty, read-only set (issue 15: memory per idle connection)."""
    request, response = transport.request, transport.response
    if request is not None:
        request.headers = _NO_HEADERS
    if response is not None:
        response.headers = _NO_HEADERS


def offered_subprotocols(request: WSUpgradeRequest) -> list[str]:
    offered: list[str] = []
    for value in request.headers.getall("Sec-WebSocket-Protocol", []):
        offered.extend(part.strip() for part in value.split(",") if part.strip())
    return offered


def make_router(
    protocols: dict[str, ListenerFactory],
) -> Callable[[WSUpgradeRequest, object], Any]:
    """A picows listener factory that answers with the first offered protocol we speak."""
    names = ", ".join(protocols)

    def route(request: WSUpgradeRequest, peer: object) -> Any:
        for name in offered_subprotocols(request):
            factory = protocols.get(name)
            if factory is not None:
                try:
                    listener = factory(request, peer)
                except Refused as refusal:
                    return WSUpgradeResponseWithListener(
                        WSUpgradeResponse.create_error_response(
                            refusal.status, (refusal.reason + "\n").encode()
                        ),
                        None,
                    )
                response = WSUpgradeResponse.create_101_response(
                    extra_headers={"Sec-WebSocket-Protocol": name}
                )
                return WSUpgradeResponseWithListener(response, listener)
        body = (
            f"Tidings speaks WebSocket subprotocols {names}: offer one in Sec-WebSocket-Protocol.\n"
        ).encode()
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_error_response(400, body), None
        )

    return route
