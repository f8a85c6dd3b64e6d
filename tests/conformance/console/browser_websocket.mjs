// The browser's WebSocket for the console's own clients (lime.js, feedme.js) under Node 20,
// which has none: the W3C interface they use (EventTarget events open / message / close /
// error, readyState, protocol, send, close) over the `ws` package that feedme-transport-ws
// already installs in ../feedme/node_modules (no new dependency). It keeps the browser's
// rules where our clients could trip on them: close() accepts only 1000 or 3000-4999 (a
// browser throws InvalidAccessError otherwise), send() before open throws, text frames arrive
// as strings, and `close` carries {code, reason, wasClean}.

import { createRequire } from "node:module";

const require = createRequire(new URL("../feedme/package.json", import.meta.url));
const WS = require("ws");

export class BrowserWebSocket extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  constructor(url, protocols) {
    super();
    this.url = url;
    this._ws = new WS(url, protocols);
    this._ws.on("open", () => this.dispatchEvent(new Event("open")));
    this._ws.on("message", (data) => {
      const event = new Event("message");
      event.data = data; // text frames are strings in ws 6
      this.dispatchEvent(event);
    });
    this._ws.on("error", () => this.dispatchEvent(new Event("error")));
    this._ws.on("close", (code, reason) => {
      const event = new Event("close");
      event.code = code;
      event.reason = String(reason ?? "");
      event.wasClean = code !== 1006; // 1006: no closing handshake
      this.dispatchEvent(event);
    });
  }

  get readyState() {
    return this._ws.readyState;
  }

  get protocol() {
    return this._ws.protocol ?? "";
  }

  send(data) {
    if (this._ws.readyState === 0) {
      throw new DOMException("Still in CONNECTING state.", "InvalidStateError");
    }
    if (this._ws.readyState === 1) this._ws.send(data);
  }

  close(code, reason) {
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new DOMException(`The code must be 1000 or in 3000-4999 (got ${code}).`, "InvalidAccessError");
    }
    if (this._ws.readyState >= 2) return;
    if (this._ws.readyState === 0) {
      this._ws.terminate();
      return;
    }
    this._ws.close(code ?? 1000, reason);
  }
}
