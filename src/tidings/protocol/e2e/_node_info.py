"""Node info: a node's public keys, signed by the node itself, as the key directory keeps it.

The document (LIME type ``application/vnd.tidings.node-info+json``)::

    {"identity": "alice@example.com", "instance": "laptop", "signId": "...", "boxId": "...",
     "published": 1764500000000, "expires": 1767092000000, "connectionInfo": [...],
     "signature": "..."}

``signature`` is the Ed25519 detached signature, by ``signId``, over the UTF-8 lines (joined by
``"\\n"``): ``tidings/node-info/v1``, identity, instance, signId, boxId, published and expires in
decimal, and the canonical JSON of ``connectionInfo`` (an empty line when it is absent). The
canonical JSON is what ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` writes: keys sorted by code point, no whitespace, non-ASCII characters
as UTF-8; integers, strings, booleans, null, arrays and objects only (no floats, whose spelling
differs between languages).

``verify_node_info`` checks the schema, the bounds, that ``boxId`` is the box key derived from
``signId``, and the signature; every failure is an ``E2EError`` whose ``kind`` says which. It
does not know who publishes it or when: the key directory checks the node and the times.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Final, Protocol

import msgspec
from nacl.signing import VerifyKey

from ._errors import E2EError
from ._ids import box_id_of, decode_key

__all__ = [
    "MAX_CONNECTION_INFO_BYTES",
    "MAX_IDENTITY_LENGTH",
    "MAX_INSTANCE_LENGTH",
    "NODE_INFO_TYPE",
    "NodeInfo",
    "Signer",
    "node_info_signed_bytes",
    "sign_node_info",
    "verify_node_info",
]

NODE_INFO_TYPE: Final = "application/vnd.tidings.node-info+json"
SIGNED_PREFIX: Final = "tidings/node-info/v1"
MAX_IDENTITY_LENGTH: Final = 512
"""Characters of ``identity`` (``name@domain``)."""
MAX_INSTANCE_LENGTH: Final = 256
"""Characters of ``instance``."""
MAX_CONNECTION_INFO_BYTES: Final = 4096
"""Bytes of the canonical JSON of ``connectionInfo``."""
MAX_CONNECTION_INFO_DEPTH: Final = 16
"""Levels of arrays and objects inside ``connectionInfo``."""
MAX_TIME: Final = 2**53 - 1
"""Times are integers a JavaScript client reads exactly."""
SIGNATURE_BYTES: Final = 64

Time = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME)]


class NodeInfo(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, rename="camel"
):
    """A node info document that verified (``verify_node_info``); wire names are camelCase
    (``signId``, ``boxId``, ``connectionInfo``)."""

    identity: str
    instance: str
    sign_id: str
    box_id: str
    published: Time
    expires: Time
    signature: str
    connection_info: list[Any] | None = None

    @property
    def node(self) -> str:
        """``identity/instance``: the LIME node that the keys belong to."""
        return f"{self.identity}/{self.instance}"

    def document(self) -> dict[str, Any]:
        """The document as published (signature included), ready to encode as JSON."""
        document: dict[str, Any] = {
            "identity": self.identity,
            "instance": self.instance,
            "signId": self.sign_id,
            "boxId": self.box_id,
            "published": self.published,
            "expires": self.expires,
        }
        if self.connection_info is not None:
            document["connectionInfo"] = self.connection_info
        document["signature"] = self.signature
        return document


class Signer(Protocol):
    """What signing needs of a node's keys (``NodeKeys``, or anything with the same two)."""

    @property
    def sign_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 detached signature of ``message``."""


def node_info_signed_bytes(
    identity: str,
    instance: str,
    sign_id: str,
    box_id: str,
    published: int,
    expires: int,
    connection_info: list[Any] | None,
) -> bytes:
    """The bytes the signature covers (fields already checked: no line breaks)."""
    lines = [
        SIGNED_PREFIX,
        identity,
        instance,
        sign_id,
        box_id,
        str(published),
        str(expires),
        "" if connection_info is None else _canonical_json(connection_info),
    ]
    return "\n".join(lines).encode("utf-8")


def sign_node_info(
    keys: Signer,
    identity: str,
    instance: str,
    published: int,
    expires: int,
    connection_info: list[Any] | None = None,
) -> dict[str, Any]:
    """The signed node info document of ``keys`` for node ``identity/instance``.

    Raises ``E2EError`` (``malformed``) for values that ``verify_node_info`` would refuse, so
    that a client never publishes what the directory cannot accept."""
    sign_id = keys.sign_id
    box_id = box_id_of(sign_id)
    _check_text(identity, instance)
    _check_times(published, expires)
    if connection_info is not None:
        _check_connection_info(connection_info)
    message = node_info_signed_bytes(
        identity, instance, sign_id, box_id, published, expires, connection_info
    )
    info = NodeInfo(
        identity=identity,
        instance=instance,
        sign_id=sign_id,
        box_id=box_id,
        published=published,
        expires=expires,
        signature=base64.b64encode(keys.sign(message)).decode("ascii"),
        connection_info=connection_info,
    )
    return info.document()


def verify_node_info(document: object) -> NodeInfo:
    """The verified ``NodeInfo`` of a decoded JSON document.

    Raises ``E2EError`` with ``kind``:
    - ``malformed``: not an object, unknown or missing fields, wrong types, out of bounds
      (lengths, times, ``connectionInfo`` size or depth, floats), a line break in a field,
      ``expires`` not after ``published``, a signature that is not base64 of 64 bytes;
    - ``invalid-key``: ``signId`` or ``boxId`` not a key id, or ``signId`` no Ed25519 key;
    - ``box-mismatch``: ``boxId`` is not the box key derived from ``signId``;
    - ``bad-signature``: the signature does not verify.
    """
    if not isinstance(document, dict):
        raise E2EError("Node info is a JSON object", kind="malformed")
    try:
        info = msgspec.convert(document, NodeInfo)
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        raise E2EError(f"Invalid node info: {exc}", kind="malformed") from None
    _check_text(info.identity, info.instance)
    _check_times(info.published, info.expires)
    if info.connection_info is not None:
        _check_connection_info(info.connection_info)
    sign_key = decode_key(info.sign_id, "signId")
    decode_key(info.box_id, "boxId")
    if box_id_of(info.sign_id) != info.box_id:
        raise E2EError("boxId is not the box key derived from signId", kind="box-mismatch")
    signature = _decode_signature(info.signature)
    message = node_info_signed_bytes(
        info.identity,
        info.instance,
        info.sign_id,
        info.box_id,
        info.published,
        info.expires,
        info.connection_info,
    )
    try:
        VerifyKey(sign_key).verify(message, signature)
    except Exception:  # BadSignatureError, or libsodium refusing a key it cannot use
        raise E2EError("The node info signature does not verify", kind="bad-signature") from None
    return info


def _check_text(identity: str, instance: str) -> None:
    name, at, domain = identity.partition("@")
    if not (0 < len(identity) <= MAX_IDENTITY_LENGTH) or not at or not name or not domain:
        raise E2EError(
            f"identity is name@domain (at most {MAX_IDENTITY_LENGTH} characters)",
            kind="malformed",
        )
    if "@" in domain or "/" in identity or not identity.isprintable() or " " in identity:
        raise E2EError("identity has a '/', a second '@', a blank or a control", kind="malformed")
    if not (0 < len(instance) <= MAX_INSTANCE_LENGTH) or not instance.isprintable():
        raise E2EError(
            f"instance is 1 to {MAX_INSTANCE_LENGTH} printable characters", kind="malformed"
        )


def _check_times(published: int, expires: int) -> None:
    for name, value in (("published", published), ("expires", expires)):
        if type(value) is not int or not 0 <= value <= MAX_TIME:
            raise E2EError(f"{name} is an integer from 0 to 2**53-1 (ms)", kind="malformed")
    if expires <= published:
        raise E2EError("expires must come after published", kind="malformed")


def _check_connection_info(value: list[Any]) -> None:
    """Plain JSON (no floats), bounded in depth before anything recurses over it, then size."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_CONNECTION_INFO_BYTES:
            raise E2EError("connectionInfo is too large", kind="malformed")
        if item is None or type(item) in (bool, str):
            continue
        if type(item) is int:
            if not -MAX_TIME <= item <= MAX_TIME:
                raise E2EError("connectionInfo integers fit in 2**53", kind="malformed")
            continue
        if type(item) is list:
            children: list[Any] = item
        elif type(item) is dict:
            if not all(type(key) is str for key in item):
                raise E2EError("connectionInfo object keys are strings", kind="malformed")
            children = list(item.values())
        else:
            raise E2EError(
                "connectionInfo holds only objects, arrays, strings, integers, booleans "
                f"and null (not {type(item).__name__})",
                kind="malformed",
            )
        if depth >= MAX_CONNECTION_INFO_DEPTH and children:
            raise E2EError("connectionInfo nests too deep", kind="malformed")
        stack.extend((child, depth + 1) for child in children)
    try:
        encoded = _canonical_json(value).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        raise E2EError("connectionInfo is not valid JSON text", kind="malformed") from None
    if len(encoded) > MAX_CONNECTION_INFO_BYTES:
        raise E2EError(
            f"connectionInfo is over {MAX_CONNECTION_INFO_BYTES} bytes of JSON", kind="malformed"
        )


def _canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _decode_signature(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise E2EError("signature is not base64", kind="malformed") from None
    if len(raw) != SIGNATURE_BYTES or base64.b64encode(raw).decode("ascii") != text:
        raise E2EError("signature is the base64 of 64 bytes", kind="malformed")
    return raw
