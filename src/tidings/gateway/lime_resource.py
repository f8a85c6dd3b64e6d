"""What every server-side LIME resource handler shares: its failure type and resource access."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ..core.authz import Method, Resource
from ..core.errors import ErrorId, Invalid
from ..core.session_registry import LiveSession
from ..protocol.lime import UNSET, Command, CommandMethod, Reason, ReasonCode
from .context import LimeContext

COLLECTION: Final = "application/vnd.lime.collection+json"


def collection(item_type: str, items: list[Any]) -> tuple[str, dict[str, Any]]:
    """A LIME collection answer: ``items`` always (``[]`` when empty), ``total`` when not empty."""
    document: dict[str, Any] = {"itemType": item_type, "items": items}
    if items:
        document["total"] = len(items)
    return COLLECTION, document


class Unsupported(Exception):
    """A request the resource cannot serve; carries the LIME reason to answer with."""

    def __init__(self, code: ReasonCode, description: str) -> None:
        super().__init__(description)
        self.reason = Reason(code=code, description=description)


def no_method(command: Command) -> Unsupported:
    return Unsupported(
        ReasonCode.COMMAND_METHOD_NOT_SUPPORTED,
        f"The method {command.method.value!r} is not supported on {command.uri}",
    )


def no_resource(command: Command) -> Unsupported:
    return Unsupported(ReasonCode.COMMAND_RESOURCE_NOT_FOUND, f"No resource {command.uri!r}")


def resource_of(command: Command) -> Any:
    """The request's resource as JSON; ``Invalid`` when it has none (decode errors propagate)."""
    if command.resource is UNSET:
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"'{command.method.value}' needs a resource")
    return msgspec.json.decode(command.resource)


_METHODS: Final = {
    CommandMethod.GET: Method.READ,
    CommandMethod.SET: Method.WRITE,
    CommandMethod.MERGE: Method.WRITE,
    CommandMethod.DELETE: Method.DELETE,
    CommandMethod.SUBSCRIBE: Method.SUBSCRIBE,
    CommandMethod.UNSUBSCRIBE: Method.SUBSCRIBE,
    CommandMethod.OBSERVE: Method.READ,
}


async def authorize(
    ctx: LimeContext, live: LiveSession, resource: Resource, owner: str, command: Command
) -> None:
    """Ask core whether the session may use ``owner``'s resource with this command."""
    await ctx.authz.check(live.identity, resource, _METHODS[command.method], owner)
