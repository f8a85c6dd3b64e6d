"""The broker of a single-node deployment: publishing is a function call to the subscribers."""

from __future__ import annotations

from collections.abc import Callable


class InProcessBroker:
    __slots__ = ("_channels",)

    def __init__(self) -> None:
        self._channels: dict[str, list[Callable[[object], int]]] = {}

    def publish(self, channel: str, message: object) -> int:
        receivers = self._channels.get(channel)
        if not receivers:
            return 0
        return sum(receiver(message) for receiver in tuple(receivers))

    def listening(self, channel: str) -> bool:
        return channel in self._channels

    def subscribe(self, channel: str, receiver: Callable[[object], int]) -> Callable[[], None]:
        receivers = self._channels.setdefault(channel, [])
        receivers.append(receiver)

        def unsubscribe() -> None:
            if receiver in receivers:
                receivers.remove(receiver)
            if not receivers and self._channels.get(channel) is receivers:
                del self._channels[channel]

        return unsubscribe
