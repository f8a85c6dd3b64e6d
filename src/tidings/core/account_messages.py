"""Messages an account sends without a connection (the HTTP API's ``POST /messages``).

Such a message is routed exactly like a LIME message of the node ``name@domain/http`` (the
account's ``HTTP_INSTANCE``): the router refuses senders the recipient does not accept, stamps
the trust scope, bounds the queues and relays other domains' recipients through federation.
The caller is answered once the message is committed (``accepted``) or refused (``failed``),
with the error the LIME path would give.

Receipts: what LIME tells a sender after ``accepted`` goes where it goes for any sender node.
``dispatched``, said at once when a session here took the message, is part of the answer; the
recipients' ``received``/``consumed`` and later failures (expired, dropped, session deleted)
are notifications to ``name@domain/http``: written to a session of the account named ``http``
when there is one (kept in its queue while it is offline), dropped otherwise, like a LIME
sender's receipts after its session is gone.

Idempotent: the store keeps one copy per (sender node, id), so a retry with the same id is
answered ``accepted`` again and stored once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from ..protocol.feedme import check_json_value
from .address import Address
from .errors import ErrorId, Invalid, TidingsError, Unavailable
from .model import RoutingRule, SessionRecord
from .ports import NoticeFactory
from .router import Router
from .session_registry import DeliveryEvent, LiveSession, SenderOutlet

HTTP_INSTANCE: Final = "http"
ACCEPT_DEADLINE_S: Final = 30.0
"""How long a sender over HTTP waits for its message's commit before a 503 (the store is
stuck): whether it was stored is then unknown, and a retry with the same id is stored once."""
"""The instance an account's HTTP messages come from (their ``from`` is ``name@domain/http``)."""
_ANSWERS: Final = frozenset(
    {DeliveryEvent.ACCEPTED, DeliveryEvent.FAILED, DeliveryEvent.DISPATCHED}
)


@dataclass(frozen=True, slots=True)
class Sent:
    message_id: str
    sender: str
    """The node the message comes from (``name@domain/http``)."""
    dispatched: bool
    """Written at once to a connected session on this node."""


class _Answer(SenderOutlet):
    """What the router tells an HTTP sender settles its request."""

    __slots__ = ("dispatched", "future")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.dispatched = False

    def notify(
        self, message_id: str, event: DeliveryEvent, error: TidingsError | None = None
    ) -> None:
        if event is DeliveryEvent.DISPATCHED:
            self.dispatched = True  # told right after accepted, in the same callback
        elif self.future.done():
            return
        elif event is DeliveryEvent.FAILED:
            assert error is not None
            self.future.set_exception(error)
        elif event is DeliveryEvent.ACCEPTED:
            self.future.set_result(None)


class AccountMessages:
    def __init__(self, router: Router, notices: NoticeFactory, max_envelope_size: int) -> None:
        self.domain = router.domain
        """A recipient without ``@domain`` is this server's."""
        self._router = router
        self._notices = notices
        self._max_envelope_size = max_envelope_size

    async def send(
        self,
        identity: str,
        to: Address,
        message_id: str,
        type_: str,
        content: Any,
        *,
        expire_after: float | None = None,
        realtime: bool = False,
    ) -> Sent:
        """Route a message from ``identity``'s HTTP node and wait for its commit; raises the
        ``TidingsError`` a LIME sender would get in ``failed`` (nothing is stored then)."""
        try:
            check_json_value(content)
        except ValueError as exc:
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"content: {exc}") from None
        node = f"{identity}/{HTTP_INSTANCE}"
        payload = self._notices.message(to.text, message_id, type_, content, sender=node)
        if len(payload) > self._max_envelope_size:
            raise Invalid(
                ErrorId.INVALID_ARGUMENT,
                f"The message is larger than an envelope may be ({len(payload)} > "
                f"{self._max_envelope_size} bytes)",
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        answer = _Answer(future)
        # a stand-in for the sender's session, as for a sender on another server: the router
        # only tells it what became of its message (it is never registered, never written to)
        record = SessionRecord(identity, HTTP_INSTANCE, RoutingRule.INSTANCE, None, None, 0.0)
        sender = LiveSession(identity, HTTP_INSTANCE, answer, record, guest=False)
        sender.receipt = _ANSWERS
        pending = self._router.send_message(
            sender, message_id, to, payload, expire_after=expire_after, realtime=realtime
        )
        if pending is not None:
            await pending
        try:
            await asyncio.wait_for(future, ACCEPT_DEADLINE_S)
        except TimeoutError:
            raise Unavailable(
                ErrorId.STORAGE_UNAVAILABLE,
                f"The message was not committed within {ACCEPT_DEADLINE_S:g} s; it may or may not "
                "be stored: send it again with the same id",
            ) from None
        return Sent(message_id, node, answer.dispatched)
