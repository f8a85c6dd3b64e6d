"""End-to-end sealing for a client: its node keys, its node info, sealing and opening.

The server relays and stores sealed messages without reading them (``docs/e2e.md``). This
layer opens every sealed message on its way in and hands the application the plaintext with
the sender node it verified; anything that does not verify is reported (``Rejection``) and
consumed, never delivered. Sealing is explicit: ``Client.send_sealed``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from tidings.protocol.e2e import (
    COPY_SUFFIX,
    MAX_KEY_ENTRIES,
    NODE_INFO_TYPE,
    SEALED_TYPE,
    E2EError,
    NodeKeys,
    open_sealed,
    seal,
    sign_node_info,
)
from tidings.protocol.lime import UNSET, Message, Raw, parse_node

from ._directory import Directory
from ._exceptions import TidingsClientError
from ._keystore import KeyStore
from ._types import OpenedMessage

__all__ = ["COPY_SUFFIX", "EndToEnd", "Rejection", "SealingFailed"]

logger = logging.getLogger("tidings.sdk")

KEY_LIFETIME_S: Final = 30 * 86400
"""How long a publication of our node info is valid; every connection publishes anew."""
REJECTIONS_KEPT: Final = 256


class SealingFailed(TidingsClientError):
    """A message could not be sealed: the recipient has no published keys, or the client has
    no keys."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A sealed message that was refused: who the server said sent it, and why."""

    id: str | None
    sender: str
    kind: str
    description: str


class EndToEnd:
    """The end-to-end part of one client (``layers`` position: nearest the wire)."""

    def __init__(
        self,
        keystore: KeyStore,
        directory: Directory,
        *,
        on_rejected: Callable[[Rejection], None] | None = None,
        clock: Callable[[], float] = time.time,
        connection_info: list[Any] | None = None,
    ) -> None:
        self.keystore = keystore
        self.connection_info = connection_info
        """Where this node takes direct connections (published in its node info)."""
        self.directory = directory
        self._on_rejected = on_rejected
        self._clock = clock
        self._node: str | None = None
        self._keys: list[NodeKeys] = []
        self._last_published = 0
        self.rejections: deque[Rejection] = deque(maxlen=REJECTIONS_KEPT)
        """The latest rejected messages, oldest first."""

    @property
    def keys(self) -> NodeKeys:
        if not self._keys:
            raise SealingFailed("the client has no keys until its session is established")
        return self._keys[0]

    def use_node(self, node: str) -> None:
        """The session's node is known (established): load or create its keys."""
        if node != self._node:
            self._node = node
            self._keys = self.keystore.keys_of(node)

    def rotate(self) -> None:
        """A new key for this node; the old one stays in the key folder for opening."""
        assert self._node is not None
        self.keystore.rotate(self._node)
        self._keys = self.keystore.keys_of(self._node)

    def node_info(self) -> tuple[str, dict[str, Any]]:
        """A fresh signed publication of this node's keys (``set /keys``)."""
        assert self._node is not None
        identity, _, instance = self._node.partition("/")
        now = max(int(self._clock() * 1000), self._last_published + 1)
        self._last_published = now
        document = sign_node_info(
            self.keys,
            identity,
            instance,
            published=now,
            expires=now + KEY_LIFETIME_S * 1000,
            connection_info=self.connection_info,
        )
        return NODE_INFO_TYPE, document

    # -- sealing -------------------------------------------------------------------------------

    async def seal(
        self,
        message_id: str,
        to: str,
        content_type: str,
        content: Any,
        for_keys: Sequence[str] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The sealed content for ``to``'s devices and ours; and whether we have other
        devices (they get a copy). ``for_keys`` (``boxId``s) seals for those devices only."""
        assert self._node is not None
        own_node = parse_node(self._node)
        own = own_node.identity
        # as the server reads ``to``: name and domain in lower case, the domain ours if omitted
        recipient = parse_node(to, own_node.domain).identity
        if for_keys is not None:
            box_ids, others = sorted(set(for_keys)), list[str]()
            if not 1 <= len(box_ids) <= MAX_KEY_ENTRIES:
                raise SealingFailed(f"a sealed message is for 1 to {MAX_KEY_ENTRIES} devices")
        else:
            box_ids, others = await self._devices_of(recipient, own)
        sealed = seal(
            self.keys,
            message_id=message_id,
            sender=self._node,
            to=recipient,
            content_type=content_type,
            content=content,
            recipients=box_ids,
        )
        return sealed, bool(others)

    async def _devices_of(self, recipient: str, own: str) -> tuple[list[str], list[str]]:
        """The ``boxId``s a message to ``recipient`` is sealed for, and those of them that
        are our own other devices."""
        devices = await self.directory.devices(recipient)
        if not devices:
            raise SealingFailed(
                f"{recipient} has no published keys: it must connect once with keys "
                "(an SDK client with keys, or 'tidings listen')"
            )
        mine = [] if recipient == own else await self.directory.devices(own)
        others = [d.box_id for d in mine if d.box_id != self.keys.box_id]
        box_ids = sorted({d.box_id for d in devices} | set(others))
        if len(box_ids) > MAX_KEY_ENTRIES:
            raise SealingFailed(
                f"{recipient} and this identity have {len(box_ids)} devices between them: a "
                f"sealed message is readable by at most {MAX_KEY_ENTRIES}"
            )
        return box_ids, others

    # -- opening (the MessageLayer) ------------------------------------------------------------

    async def outgoing(self, message: Message) -> Message:
        return message

    async def incoming(self, message: Message) -> Message | None:
        if message.type != SEALED_TYPE:
            return message
        sender = message.from_ if message.from_ is not UNSET else ""
        message_id = message.id if message.id is not UNSET else None
        if sender == self._node and message_id is not None and message_id.endswith(COPY_SUFFIX):
            return None  # our own copy for our other devices, come back to us
        try:
            opened = open_sealed(
                message.content,
                message_id=message_id or "",
                envelope_from=sender,
                envelope_to=message.to if message.to is not UNSET else "",
                my_keys=self._keys,
            )
            await self._check_key(opened.sign_id, opened.sender)
        except E2EError as refusal:
            self._reject(message_id, sender, refusal.kind, str(refusal))
            return None
        return OpenedMessage(
            id=message.id,
            from_=message.from_,
            to=message.to,
            pp=message.pp,
            metadata=message.metadata,
            type=opened.type,
            content=Raw(msgspec.json.encode(opened.content)),
            verified_sender=opened.sender,
            verified_sign_id=opened.sign_id,
        )

    async def _check_key(self, sign_id: str, sender: str) -> None:
        """The signing key must be one the sender node published, and not revoked."""
        owner = await self.directory.owner(sign_id, sender.partition("/")[0])
        if owner is None or owner.node != sender:
            raise E2EError(f"the key {sign_id} is not published for {sender}", kind="unknown-key")
        if owner.revoked:
            raise E2EError(f"the key {sign_id} of {sender} has been revoked", kind="revoked-key")

    def _reject(self, message_id: str | None, sender: str, kind: str, description: str) -> None:
        rejection = Rejection(message_id, sender, kind, description)
        logger.warning(
            "%s: rejected sealed message %s from %s (%s): %s",
            self._node,
            message_id,
            sender,
            kind,
            description,
        )
        self.rejections.append(rejection)
        if self._on_rejected is not None:
            self._on_rejected(rejection)
