"""An app handler notifies a named LIME session; the notification waits in its queue."""

from __future__ import annotations

import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration


async def test_feedme_action_notifies_a_lime_session_once(tmp_path):
    server = ServerProcess(tmp_path, args=["--app", "tests.integration.notify_app:app"])
    assert server.tidings("account", "add", "bob", "--password", "pw").returncode == 0
    server.start()
    try:
        shop = await WireClient.connect(server.ws_url, subprotocol="feedme")
        shop.send({"MessageType": "Handshake", "Versions": ["0.1"]})
        await shop.expect(lambda m: m.get("MessageType") == "HandshakeResponse")
        # The same order twice: queued the first time, recognised as a repeat the second.
        for callback, queued in (("1", ["phone"]), ("2", [])):
            shop.send(
                {
                    "MessageType": "Action",
                    "ActionName": "order",
                    "CallbackId": callback,
                    "ActionArgs": {"item": "book"},
                }
            )
            done = await shop.expect(lambda m, c=callback: m.get("CallbackId") == c)
            assert done["Success"] is True and done["ActionData"] == {"sessions": queued}
        bob = await WireClient.connect(server.ws_url)
        assert (await bob.establish("bob@localhost/phone", password="pw"))["state"] == (
            "established"
        )
        note = await bob.expect(lambda e: "content" in e)
        assert note["id"] == "order-book"
        assert note["content"] == {"ordered": "book"}
        assert note["from"] == "postmaster@localhost/server"
        pong = await bob.command(id="after", method="get", uri="/ping")
        assert pong["status"] == "success"
        assert not [e for e in bob.held if e.get("id") == "order-book"]
    finally:
        server.stop()
