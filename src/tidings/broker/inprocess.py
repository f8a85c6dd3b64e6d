"""The broker of a single-node deployment, and of tests that run several nodes in one process:
publishing is a function call to the subscribers, made at once, in order."""

from __future__ import annotations

from collections.abc import Callable


class Bus:
    """The channels that the in-process brokers made from it share (one per "deployment").

    ``suspend`` / ``restore`` simulate a broker outage for tests: publications are dropped
    meanwhile, and ``restore`` calls every broker's reconnect callbacks."""

    __slots__ = ("brokers", "channels", "dropped", "suspended")

    def __init__(self) -> None:
        self.channels: dict[str, list[Callable[[bytes], None]]] = {}
        self.brokers: list[InProcessBroker] = []
        self.suspended = False
        self.dropped = 0

    def suspend(self) -> None:
        self.suspended = True

    def restore(self) -> None:
        self.suspended = False
        for broker in list(self.brokers):
            broker.reconnected()


class InProcessBroker:
    """``core.ports.Broker`` within one process. ``join`` makes the broker of another node on
    the same bus (tests with several nodes in one event loop)."""

    __slots__ = ("_bus", "_reconnect", "node_id")

    distributed = False
    """Nodes sharing its bus become known when heard (a single node never is)."""

    def __init__(self, node_id: str = "local", bus: Bus | None = None) -> None:
        self.node_id = node_id
        self._bus = bus if bus is not None else Bus()
        self._bus.brokers.append(self)
        self._reconnect: list[Callable[[], None]] = []

    @property
    def bus(self) -> Bus:
        return self._bus

    @property
    def connected(self) -> bool:
        return not self._bus.suspended

    def join(self, node_id: str) -> InProcessBroker:
        """The broker of another node sharing this one's channels."""
        return InProcessBroker(node_id, self._bus)

    def publish(self, channel: str, message: bytes) -> None:
        bus = self._bus
        if bus.suspended:
            bus.dropped += 1
            return
        receivers = bus.channels.get(channel)
        if receivers:
            for receiver in tuple(receivers):
                receiver(message)

    def listening(self, channel: str) -> bool:
        return channel in self._bus.channels

    def subscribe(self, channel: str, receiver: Callable[[bytes], None]) -> Callable[[], None]:
        channels = self._bus.channels
        receivers = channels.setdefault(channel, [])
        receivers.append(receiver)

        def unsubscribe() -> None:
            if receiver in receivers:
                receivers.remove(receiver)
            if not receivers and channels.get(channel) is receivers:
                del channels[channel]

        return unsubscribe

    async def flushed(self) -> None:
        return None  # published is delivered

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnect.append(callback)

    def reconnected(self) -> None:
        """Call the reconnect callbacks (the bus does after an outage)."""
        for callback in list(self._reconnect):
            callback()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        if self in self._bus.brokers:
            self._bus.brokers.remove(self)
