"""``/apps/{name}``: LIME clients calling app request handlers, optionally as a step of a
persistent session (nonce and memento in ``metadata``, committed with the handler's writes)."""

from __future__ import annotations

from typing import Any, Final

from ..core.app_requests import AppRequest
from ..core.authz import Resource
from ..core.errors import ErrorId, Invalid
from ..core.session_registry import LiveSession
from ..protocol.lime import Command, CommandMethod
from .context import LimeContext
from .lime_resource import authorize, no_method, no_resource, resource_of
from .lime_sessions import persist_step

APPS_PREFIX: Final = "/apps/"
APP_RESULT: Final = "application/json"


async def apps_resource(
    ctx: LimeContext, live: LiveSession, owner: str, rest: list[str], command: Command
) -> Any:
    service = ctx.app_requests
    if len(rest) != 1:
        raise no_resource(command)
    if command.method is not CommandMethod.SET:
        raise no_method(command)
    await authorize(ctx, live, Resource.APPS, owner, command)
    args = resource_of(command)
    if not isinstance(args, dict):
        raise Invalid(ErrorId.INVALID_ARGUMENT, "An app request's resource is a JSON object")
    persist = persist_step(live, command.metadata)
    request = AppRequest(live.identity, live.instance, rest[0], args, persist is not None)
    return APP_RESULT, await service.execute(request, persist)
