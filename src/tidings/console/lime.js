// lime.js: a small LIME client for browsers (ES module, no dependencies), Tidings' own.
//
// It speaks LIME over one WebSocket (subprotocol "lime"), one JSON envelope per text frame,
// as docs/lime.md describes the server side. Documented in docs/console.md.
//
//   import { LimeClient } from "/console/lime.js";
//   const client = new LimeClient("ws://127.0.0.1:8765/");
//   client.on("message", (m) => console.log(m.from, m.content));
//   await client.connect({ identity: "alice@localhost", password: "secret", instance: "web" });
//   await client.setReceipt(["accepted", "dispatched", "received"]);
//   const id = client.sendMessage({ to: "bob@localhost", type: "text/plain", content: "hi" });
//   await client.finish();

/** A new envelope id (a UUID v4; crypto.randomUUID needs a secure context, this does not). */
import { Listeners } from "./listeners.js";

export function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Base64 of a string's UTF-8 bytes (what the plain scheme carries). */
export function base64Utf8(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** The identity (name@domain) of a node (name@domain/instance). */
export function identityOf(node) {
  return String(node || "").split("/")[0];
}

/** A session that failed, or a command that failed or timed out: `reason` is LIME's
 * {code, description} when the server gave one. */
export class LimeError extends Error {
  constructor(message, reason = null, envelope = null) {
    super(message);
    this.name = "LimeError";
    this.reason = reason;
    this.envelope = envelope;
  }
}

/**
 * One LIME client channel over a WebSocket.
 *
 * Events (client.on(type, listener), client.off(type, listener)):
 *  - "message":      every message received (after the automatic `received` notification)
 *  - "notification": every notification received (accepted, dispatched, received, failed...)
 *  - "command":      commands and command responses not awaited by sendCommand
 *  - "session":      session envelopes received after establishment (finished, failed)
 *  - "close":        the WebSocket closed ({code, reason, wasClean})
 */
export class LimeClient extends Listeners {
  /**
   * @param {string} url  ws:// or wss:// URL of the server's WebSocket port
   * @param {object} options  commandTimeout (ms, 6000), autoNotifyReceipt (true: answer every
   *   message that has an id and a from with a `received` notification, as lime-js does),
   *   autoReplyPings (true: answer the server's `get /ping`), WebSocket (the constructor)
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.commandTimeout = options.commandTimeout ?? 6000;
    this.autoNotifyReceipt = options.autoNotifyReceipt ?? true;
    this.autoReplyPings = options.autoReplyPings ?? true;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    /** "new", "authenticating", "established", "finishing", "finished" or "failed" */
    this.state = "new";
    this.sessionId = null;
    /** This session's node once established (the `to` of `established`). */
    this.localNode = null;
    /** The server's node (the `from` of `established`). */
    this.remoteNode = null;
    this._socket = null;
    this._pending = new Map(); // command id -> {resolve, reject, timer}
    this._waiter = null; // the next session envelope awaited by connect/finish
  }

  /**
   * Open the WebSocket and establish a session. `credentials`: {identity, instance?} with
   * one of {password} (scheme plain), {key} (scheme key: a key made with
   * `tidings account key`, sent base64) or {guest: true} (scheme guest, servers started with --allow-guests).
   * Resolves with the `established` envelope; rejects with a LimeError (the `failed`
   * session's reason) or when the connection closes first.
   */
  async connect(credentials) {
    if (this._socket !== null) throw new LimeError("This client is already connected");
    const socket = new this.WebSocket(this.url, "lime");
    this._socket = socket;
    socket.addEventListener("message", (event) => this._receive(event.data));
    socket.addEventListener("close", (event) => this._closed(event));
    await new Promise((resolve, reject) => {
      socket.addEventListener("open", resolve, { once: true });
      socket.addEventListener(
        "close",
        () => reject(new LimeError(`Cannot connect to ${this.url}`)),
        { once: true },
      );
    });
    if (socket.protocol !== "lime") {
      socket.close(1000); // a browser's close() takes only 1000 or 3000-4999
      throw new LimeError("The server did not accept the lime subprotocol");
    }
    const offer = await this._exchange({ state: "new" });
    if (offer.state !== "authenticating") return this._failedSession(offer);
    this.sessionId = offer.id;
    this.state = "authenticating";
    const [scheme, authentication] = schemeOf(credentials);
    if (Array.isArray(offer.schemeOptions) && !offer.schemeOptions.includes(scheme)) {
      socket.close(1000);
      throw new LimeError(`The server does not offer the ${scheme} scheme`);
    }
    const instance = credentials.instance ? `/${credentials.instance}` : "";
    const answer = await this._exchange({
      id: this.sessionId,
      state: "authenticating",
      from: `${credentials.identity}${instance}`,
      scheme,
      authentication,
    });
    if (answer.state !== "established") return this._failedSession(answer);
    this.state = "established";
    this.localNode = answer.to;
    this.remoteNode = answer.from;
    return answer;
  }

  /** Send a message (an id is added unless it has one, or `id: null` for fire and forget);
   * returns its id. */
  sendMessage(message) {
    const envelope = { ...message };
    if (envelope.id === undefined) envelope.id = newId();
    if (envelope.id === null) delete envelope.id;
    this._send(envelope);
    return envelope.id ?? null;
  }

  /** Send a notification ({id, to, event, reason?}). */
  sendNotification(notification) {
    this._send(notification);
  }

  /** Send a command and resolve with its response (same id, a status); rejects with a
   * LimeError on a `failure` response (its reason) or after `commandTimeout` ms. */
  sendCommand(command) {
    const envelope = { id: newId(), ...command };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(envelope.id);
        reject(new LimeError(`No response to ${envelope.method} ${envelope.uri}`));
      }, this.commandTimeout);
      this._pending.set(envelope.id, { resolve, reject, timer });
      try {
        this._send(envelope);
      } catch (error) {
        clearTimeout(timer);
        this._pending.delete(envelope.id);
        reject(error);
      }
    });
  }

  /** Which notifications the server sends about this session's messages
   * (`failed` always comes). */
  setReceipt(events) {
    return this.sendCommand({
      method: "set",
      uri: "/receipt",
      type: "application/vnd.lime.receipt+json",
      resource: { events },
    });
  }

  /** Finish the session: resolves with `finished` (the server then closes the socket);
   * when not established, just closes. */
  async finish() {
    if (this.state !== "established") {
      this.close();
      return null;
    }
    this.state = "finishing";
    return this._exchange({ id: this.sessionId, state: "finishing" });
  }

  /** Close the WebSocket without finishing the session. */
  close() {
    if (this._socket !== null && this._socket.readyState <= 1) this._socket.close(1000);
  }

  _send(envelope) {
    if (this._socket === null || this._socket.readyState !== 1) {
      throw new LimeError("The connection is not open");
    }
    this._socket.send(JSON.stringify(envelope));
  }

  _exchange(session) {
    return new Promise((resolve, reject) => {
      this._waiter = { resolve, reject };
      this._send(session);
    });
  }

  _failedSession(envelope) {
    this.state = "failed";
    const reason = envelope.reason ?? null;
    const text = reason ? `${reason.description} (${reason.code})` : "The session failed";
    throw new LimeError(text, reason, envelope);
  }

  _receive(data) {
    let envelope;
    try {
      envelope = JSON.parse(data);
    } catch {
      return; // the server sends JSON only
    }
    if (envelope.state !== undefined) {
      this._session(envelope);
    } else if (envelope.method !== undefined) {
      this._command(envelope);
    } else if (envelope.event !== undefined) {
      this._emit("notification", envelope);
    } else if (envelope.type !== undefined || envelope.content !== undefined) {
      this._message(envelope);
    }
  }

  _session(envelope) {
    if (envelope.state === "finished" || envelope.state === "failed") {
      this.state = envelope.state;
    }
    const waiter = this._waiter;
    if (waiter !== null) {
      this._waiter = null;
      waiter.resolve(envelope);
    } else {
      this._emit("session", envelope);
    }
  }

  _command(envelope) {
    const pending = envelope.status !== undefined ? this._pending.get(envelope.id) : undefined;
    if (pending !== undefined) {
      this._pending.delete(envelope.id);
      clearTimeout(pending.timer);
      if (envelope.status === "success") {
        pending.resolve(envelope);
      } else {
        const reason = envelope.reason ?? null;
        const text = reason ? `${reason.description} (${reason.code})` : "The command failed";
        pending.reject(new LimeError(text, reason, envelope));
      }
      return;
    }
    if (
      this.autoReplyPings &&
      envelope.status === undefined &&
      envelope.method === "get" &&
      envelope.uri === "/ping" &&
      envelope.id !== undefined
    ) {
      this._send({
        id: envelope.id,
        to: envelope.from,
        method: "get",
        status: "success",
        type: "application/vnd.lime.ping+json",
        resource: {},
      });
      return;
    }
    this._emit("command", envelope);
  }

  _message(envelope) {
    if (this.autoNotifyReceipt && envelope.id !== undefined && envelope.from !== undefined) {
      this._send({ id: envelope.id, to: envelope.pp ?? envelope.from, event: "received" });
    }
    this._emit("message", envelope);
  }

  _closed(event) {
    const error = new LimeError(`The connection closed (${event.code})`);
    if (this._waiter !== null) {
      const waiter = this._waiter;
      this._waiter = null;
      if (this.state === "finishing") {
        waiter.resolve(null);
      } else {
        waiter.reject(error);
      }
    }
    for (const { reject, timer } of this._pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this._pending.clear();
    if (this.state !== "finished" && this.state !== "failed") this.state = "failed";
    this._socket = null;
    this._emit("close", { code: event.code, reason: event.reason, wasClean: event.wasClean });
  }
}

function schemeOf(credentials) {
  if (credentials.password !== undefined) {
    return ["plain", { password: base64Utf8(credentials.password) }];
  }
  if (credentials.key !== undefined) return ["key", { key: base64Utf8(credentials.key) }];
  if (credentials.guest) return ["guest", {}];
  throw new LimeError("Give a password, a key or guest: true");
}
