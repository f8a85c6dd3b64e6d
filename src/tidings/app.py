"""Public API for writing Tidings apps (Feedme actions and feeds); see ``core/apps.py``."""

from .core.app_requests import AppRefused, AppRequest, AppState
from .core.apps import (
    ActionRequest,
    App,
    FeedCloseRequest,
    FeedOpenRequest,
    HandshakeRequest,
    Responder,
)
from .core.feeds import ServerState
from .protocol.feedme import Delta, DeltaOperation

__all__ = [
    "ActionRequest",
    "App",
    "AppRefused",
    "AppRequest",
    "AppState",
    "Delta",
    "DeltaOperation",
    "FeedCloseRequest",
    "FeedOpenRequest",
    "HandshakeRequest",
    "Responder",
    "ServerState",
]
