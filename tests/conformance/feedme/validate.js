"use strict";
// stdin: {"side": "server" | "client", "text": <raw frame text>} per line.
// "server": validate as feedme-client session.js does for a server message.
// "client": validate with the util's client-message validators (what a
//           spec-following server must accept).
// stdout: {"ok": true} or {"ok": false, "error": "..."} per line.
const { load, serveLines } = require("./oracle");

const serverTypes = {
  ViolationResponse: load("validateviolationresponse.js"),
  HandshakeResponse: load("validatehandshakeresponse.js"),
  ActionResponse: load("validateactionresponse.js"),
  FeedOpenResponse: load("validatefeedopenresponse.js"),
  FeedCloseResponse: load("validatefeedcloseresponse.js"),
  ActionRevelation: load("validateactionrevelation.js"),
  FeedTermination: load("validatefeedtermination.js"),
};
const clientTypes = {
  Handshake: load("validatehandshake.js"),
  Action: load("validateaction.js"),
  FeedOpen: load("validatefeedopen.js"),
  FeedClose: load("validatefeedclose.js"),
};
const validateServerMessage = load("validateservermessage.js");
const validateClientMessage = load("validateclientmessage.js");

serveLines((line) => {
  const { side, text } = JSON.parse(line);
  try {
    const msg = JSON.parse(text);
    if (side === "server") {
      validateServerMessage.check(msg);
      serverTypes[msg.MessageType].check(msg, false);
    } else {
      validateClientMessage.check(msg);
      clientTypes[msg.MessageType].check(msg, false);
    }
  } catch (e) {
    return { ok: false, error: e.message };
  }
  return { ok: true };
});
