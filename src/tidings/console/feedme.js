// feedme.js: a small Feedme client for browsers (ES module, no dependencies), Tidings' own.
//
// It speaks Feedme 0.1 over one WebSocket (subprotocol "feedme"), one JSON message per text
// frame, as docs/feedme.md describes the server side, and behaves like the npm feedme-client
// 0.0.35 where that matters: deltas are applied with feedme-util 0.2.2's semantics, FeedMd5 is
// checked, and a bad revelation closes the feed and reopens it. Documented in docs/console.md.
//
//   import { FeedmeClient } from "/console/feedme.js";
//   const client = new FeedmeClient("ws://127.0.0.1:8765/");
//   client.on("action", (a) => render(a.newData));
//   await client.connect();
//   const data = await client.openFeed("scores", { game: "g1" });
//   await client.closeFeed("scores", { game: "g1" });
//   client.disconnect();

/** A failed operation: `code` is Feedme's ErrorCode (or one of ours, e.g. "DISCONNECTED"),
 * `data` its ErrorData. */
import { Listeners } from "./listeners.js";

export class FeedmeError extends Error {
  constructor(code, message, data = {}) {
    super(`${code}: ${message}`);
    this.name = "FeedmeError";
    this.code = code;
    this.data = data;
  }
}

/** A delta that does not apply to the feed document (the client then reopens the feed). */
export class DeltaError extends Error {
  constructor(code, delta) {
    super(`${code}: ${delta.Operation} at ${JSON.stringify(delta.Path)}`);
    this.name = "DeltaError";
    this.code = code;
    this.delta = delta;
  }
}

// ---------------------------------------------------------------------------------------------
// Deltas (feedme-util 0.2.2 deltawriter semantics, as src/tidings/protocol/feedme/_deltas.py)

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isContainer = (v) => v !== null && typeof v === "object";

/** Deep equality as lodash isEqual for JSON values (1 !== true; 0 equals -0). */
export function deepEqual(a, b) {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const keys = Object.keys(a);
    return (
      keys.length === Object.keys(b).length &&
      keys.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]))
    );
  }
  return false;
}

/** The member `key` of `container`: {exists, value}; throws for a key of the wrong type
 * (an integer on an object or a string on an array, where JavaScript would quietly make an
 * invisible property: the server refuses those too). */
function member(container, key, delta) {
  if (!isContainer(container)) throw new DeltaError("NOT_A_CONTAINER", delta);
  if (Array.isArray(container)) {
    if (!Number.isInteger(key)) throw new DeltaError("STRICT_PATH_TYPE", delta);
    return { exists: key >= 0 && key < container.length, value: container[key] };
  }
  if (typeof key !== "string") throw new DeltaError("STRICT_PATH_TYPE", delta);
  return { exists: Object.hasOwn(container, key), value: container[key] };
}

/** The value at `path` (which must exist). */
function valueAt(root, path, delta) {
  let value = root;
  for (const key of path) {
    const found = member(value, key, delta);
    if (!found.exists) throw new DeltaError("NON_EXISTENT", delta);
    value = found.value;
  }
  return value;
}

const VALUE_OPS = new Set([
  "Set", "DeleteValue", "Prepend", "Append", "Increment", "Decrement",
  "InsertFirst", "InsertLast", "InsertBefore", "InsertAfter",
]);
const BARE_OPS = new Set(["Delete", "Toggle", "DeleteFirst", "DeleteLast"]);

/**
 * Apply one delta to `root` in place and return the root (a new one only after a Set on []).
 * Throws a DeltaError when the delta does not apply; the document may then be half-changed,
 * so applyDeltas works on a copy.
 */
export function applyDelta(root, delta) {
  const op = delta.Operation;
  const path = delta.Path;
  if (!Array.isArray(path) || (!VALUE_OPS.has(op) && !BARE_OPS.has(op))) {
    throw new DeltaError("INVALID_DELTA", delta);
  }
  const value = delta.Value;
  if (op === "Set" && path.length === 0) {
    if (!isObject(value)) throw new DeltaError("ROOT_NOT_OBJECT", delta);
    return structuredClone(value);
  }
  if (op === "DeleteValue") {
    const target = valueAt(root, path, delta);
    if (Array.isArray(target)) {
      const kept = target.filter((v) => !deepEqual(v, value));
      target.splice(0, target.length, ...kept);
    } else if (isObject(target)) {
      for (const k of Object.keys(target)) if (deepEqual(target[k], value)) delete target[k];
    } else {
      throw new DeltaError("NOT_DELETABLE_FROM", delta);
    }
    return root;
  }
  if (op === "InsertFirst" || op === "InsertLast" || op === "DeleteFirst" || op === "DeleteLast") {
    const target = valueAt(root, path, delta);
    if (!Array.isArray(target)) throw new DeltaError("NOT_AN_ARRAY", delta);
    if (op === "InsertFirst") target.unshift(structuredClone(value));
    else if (op === "InsertLast") target.push(structuredClone(value));
    else if (target.length === 0) throw new DeltaError("EMPTY_ARRAY", delta);
    else if (op === "DeleteFirst") target.shift();
    else target.pop();
    return root;
  }
  // The rest work on a member of a container: the root itself has none.
  if (path.length === 0) {
    throw new DeltaError(op === "Delete" ? "ROOT_NOT_DELETABLE" : "ROOT_HAS_NO_CONTAINER", delta);
  }
  const parent = valueAt(root, path.slice(0, -1), delta);
  const key = path[path.length - 1];
  const found = member(parent, key, delta);
  if (op === "Set") {
    if (Array.isArray(parent) && key > parent.length) throw new DeltaError("NON_CONTIGUOUS", delta);
    parent[key] = structuredClone(value);
    return root;
  }
  if (!found.exists) throw new DeltaError("NON_EXISTENT", delta);
  const current = found.value;
  switch (op) {
    case "Delete":
      if (Array.isArray(parent)) parent.splice(key, 1);
      else delete parent[key];
      break;
    case "Prepend":
    case "Append":
      if (typeof current !== "string" || typeof value !== "string") {
        throw new DeltaError("NOT_A_STRING", delta);
      }
      parent[key] = op === "Prepend" ? value + current : current + value;
      break;
    case "Increment":
    case "Decrement": {
      if (typeof current !== "number" || typeof value !== "number") {
        throw new DeltaError("NOT_A_NUMBER", delta);
      }
      const result = op === "Increment" ? current + value : current - value;
      if (!Number.isFinite(result)) throw new DeltaError("STRICT_NON_FINITE", delta);
      parent[key] = result;
      break;
    }
    case "Toggle":
      if (typeof current !== "boolean") throw new DeltaError("NOT_A_BOOLEAN", delta);
      parent[key] = !current;
      break;
    case "InsertBefore":
    case "InsertAfter":
      if (!Array.isArray(parent)) throw new DeltaError("NOT_AN_ARRAY", delta);
      parent.splice(op === "InsertBefore" ? key : key + 1, 0, structuredClone(value));
      break;
    default:
      throw new DeltaError("INVALID_DELTA", delta);
  }
  return root;
}

/** Apply deltas in order to a copy of `data` and return the copy (`data` is untouched, also
 * when a DeltaError is thrown). */
export function applyDeltas(data, deltas) {
  let result = structuredClone(data);
  for (const delta of deltas) result = applyDelta(result, delta);
  return result;
}

// ---------------------------------------------------------------------------------------------
// FeedMd5: Base64 of MD5 over the UTF-8 of canonical JSON (feedme-util md5calculator).
//
// The Web Crypto API has no MD5 (crypto.subtle refuses it), so this is a small MD5 of our own
// (RFC 1321). It only checks that our copy of the document is the server's: nothing secret
// depends on it, MD5's collisions do not matter here.

/** Canonical JSON: object keys sorted by UTF-16 code units, no whitespace; numbers and strings
 * exactly as JSON.stringify writes them (which is what the server imitates). */
export function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (isObject(value)) {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

const MD5_SHIFTS = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
// floor(abs(sin(i + 1)) * 2^32), written out: Math.sin's last bits may differ between engines.
const MD5_K = new Uint32Array([
  0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
  0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
  0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
  0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
  0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
  0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
  0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
  0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
]);

/** MD5 (RFC 1321) of bytes (a Uint8Array): the 16-byte digest. */
export function md5(bytes) {
  const length = bytes.length;
  const words = new Uint32Array((((length + 8) >>> 6) + 1) * 16);
  for (let i = 0; i < length; i++) words[i >>> 2] |= bytes[i] << ((i % 4) * 8);
  words[length >>> 2] |= 0x80 << ((length % 4) * 8);
  words[words.length - 2] = (length * 8) >>> 0;
  words[words.length - 1] = Math.floor(length / 0x20000000);
  const state = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
  for (let chunk = 0; chunk < words.length; chunk += 16) {
    let [a, b, c, d] = state;
    for (let i = 0; i < 64; i++) {
      let f;
      let g;
      if (i < 16) {
        f = (b & c) | (~b & d);
        g = i;
      } else if (i < 32) {
        f = (d & b) | (~d & c);
        g = (5 * i + 1) % 16;
      } else if (i < 48) {
        f = b ^ c ^ d;
        g = (3 * i + 5) % 16;
      } else {
        f = c ^ (b | ~d);
        g = (7 * i) % 16;
      }
      f = (f + a + MD5_K[i] + words[chunk + g]) | 0;
      const shift = MD5_SHIFTS[(i >>> 4) * 4 + (i % 4)];
      a = d;
      d = c;
      c = b;
      b = (b + ((f << shift) | (f >>> (32 - shift)))) | 0;
    }
    state[0] = (state[0] + a) | 0;
    state[1] = (state[1] + b) | 0;
    state[2] = (state[2] + c) | 0;
    state[3] = (state[3] + d) | 0;
  }
  const digest = new Uint8Array(16);
  state.forEach((word, w) => {
    for (let i = 0; i < 4; i++) digest[w * 4 + i] = (word >>> (i * 8)) & 0xff;
  });
  return digest;
}

/** The FeedMd5 of a feed document (24 characters of padded Base64). */
export function feedMd5(data) {
  const digest = md5(new TextEncoder().encode(canonicalJson(data)));
  return btoa(String.fromCharCode(...digest));
}

// ---------------------------------------------------------------------------------------------
// The client

/** The identity of a feed: its name and args, whatever the order of the args' keys. */
export function feedKey(name, args) {
  const entries = Object.entries(args).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([name, ...entries]);
}

const REOPEN_MAX = 3;
const REOPEN_WINDOW_MS = 60000;

/**
 * One Feedme client over a WebSocket.
 *
 * Events (client.on(type, listener), client.off(type, listener)):
 *  - "open":    a feed opened ({feedName, feedArgs, data}), also after a reopen
 *  - "action":  a revelation was applied ({feedName, feedArgs, actionName, actionData,
 *               deltas, oldData, newData, md5Checked})
 *  - "close":   a feed stopped being open other than by closeFeed ({feedName, feedArgs, error}:
 *               a FeedmeError, "TERMINATED" for a FeedTermination, "BAD_ACTION_REVELATION"
 *               before an automatic reopen, "DISCONNECTED" when the connection went)
 *  - "badServerMessage": a message we could not use ({error, message})
 *  - "badClientMessage": the server's ViolationResponse ({diagnostics})
 *  - "disconnect": the WebSocket closed ({code, reason, wasClean})
 */
export class FeedmeClient extends Listeners {
  /**
   * @param {string} url  ws:// or wss:// URL of the server's WebSocket port (append
   *   `?token=API_KEY` to read accounts' own feeds)
   * @param {object} options  timeout (ms for the connection + handshake and for each feed
   *   open/close, 10000), verifyMd5 (true), WebSocket (the constructor; the browser's)
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.timeout = options.timeout ?? 10000;
    this.verifyMd5 = options.verifyMd5 ?? true;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    /** "disconnected", "connecting" or "connected" */
    this.state = "disconnected";
    this._socket = null;
    this._feeds = new Map(); // feedKey -> {name, args, state, data, waiter, reopens: [ms]}
    this._actions = new Map(); // CallbackId -> {resolve, reject}
    this._handshake = null;
    this._nextCallback = 1;
  }

  /** Open the WebSocket and handshake (version "0.1"). Rejects with a FeedmeError
   * (HANDSHAKE_REJECTED, TIMEOUT, DISCONNECTED). */
  async connect() {
    if (this.state !== "disconnected") throw new FeedmeError("INVALID_STATE", "Already connected.");
    this.state = "connecting";
    const socket = new this.WebSocket(this.url, "feedme");
    this._socket = socket;
    socket.addEventListener("message", (event) => this._receive(event.data));
    socket.addEventListener("close", (event) => this._closed(socket, event));
    const done = new Promise((resolve, reject) => {
      this._handshake = { resolve, reject };
    });
    const timer = setTimeout(() => {
      this._handshake?.reject(new FeedmeError("TIMEOUT", "No handshake in time."));
      this._handshake = null;
      socket.close();
    }, this.timeout);
    socket.addEventListener("open", () => {
      if (socket.protocol !== "feedme") {
        this._handshake?.reject(new FeedmeError("FAILURE", "The server refused subprotocol feedme."));
        this._handshake = null;
        socket.close();
        return;
      }
      this._send({ MessageType: "Handshake", Versions: ["0.1"] });
    });
    try {
      await done;
    } finally {
      clearTimeout(timer);
    }
    this.state = "connected";
  }

  /** Close the WebSocket; open feeds emit "close" with DISCONNECTED. */
  disconnect() {
    this._socket?.close(1000);
  }

  /** Open a feed (args: an object of strings) and resolve with its document; rejects with a
   * FeedmeError carrying the server's ErrorCode and ErrorData. */
  openFeed(name, args = {}) {
    if (typeof name !== "string" || name === "") throw new TypeError("A feed name is a non-empty string.");
    if (!isObject(args) || !Object.values(args).every((v) => typeof v === "string")) {
      throw new TypeError("Feed args are an object of strings.");
    }
    this._requireConnected();
    const key = feedKey(name, args);
    const known = this._feeds.get(key);
    if (known && known.state !== "closed" && known.state !== "terminated") {
      throw new FeedmeError("INVALID_STATE", `The feed is ${known.state}.`);
    }
    const feed = known ?? { name, args: { ...args }, state: "closed", data: null, reopens: [] };
    this._feeds.set(key, feed);
    return this._open(feed);
  }

  /** Close an open feed; resolves once the server confirmed (FeedCloseResponse). */
  closeFeed(name, args = {}) {
    this._requireConnected();
    const feed = this._feeds.get(feedKey(name, args));
    if (!feed || feed.state !== "open") throw new FeedmeError("INVALID_STATE", "The feed is not open.");
    return this._close(feed).then(() => {
      this._feeds.delete(feedKey(name, args));
    });
  }

  /** "closed", "opening", "open", "closing" or "terminated". */
  feedState(name, args = {}) {
    return this._feeds.get(feedKey(name, args))?.state ?? "closed";
  }

  /** The document of an open feed (do not change it: the next revelation applies to it). */
  feedData(name, args = {}) {
    const feed = this._feeds.get(feedKey(name, args));
    if (!feed || feed.state !== "open") throw new FeedmeError("INVALID_STATE", "The feed is not open.");
    return feed.data;
  }

  /** Invoke an action; resolves with its ActionData, rejects with a FeedmeError. */
  action(name, args = {}) {
    this._requireConnected();
    const id = String(this._nextCallback++);
    this._send({ MessageType: "Action", ActionName: name, ActionArgs: args, CallbackId: id });
    return new Promise((resolve, reject) => this._actions.set(id, { resolve, reject }));
  }

  // -- internals ---------------------------------------------------------------------------

  _requireConnected() {
    if (this.state !== "connected") throw new FeedmeError("INVALID_STATE", "Not connected.");
  }

  _open(feed) {
    feed.state = "opening";
    this._send({ MessageType: "FeedOpen", FeedName: feed.name, FeedArgs: feed.args });
    return this._await(feed);
  }

  _close(feed) {
    feed.state = "closing";
    feed.data = null;
    this._send({ MessageType: "FeedClose", FeedName: feed.name, FeedArgs: feed.args });
    return this._await(feed);
  }

  /** Wait for the response to the FeedOpen or FeedClose just sent. */
  _await(feed) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        feed.waiter = null;
        reject(new FeedmeError("TIMEOUT", "The server did not answer in time."));
      }, this.timeout);
      feed.waiter = {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
    });
  }

  _settle(feed, error, value) {
    const waiter = feed.waiter;
    feed.waiter = null;
    if (waiter && error) waiter.reject(error);
    else if (waiter) waiter.resolve(value);
  }

  _send(message) {
    this._socket.send(JSON.stringify(message));
  }

  _receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch (error) {
      this._emit("badServerMessage", { error: new FeedmeError("INVALID_MESSAGE", "Invalid JSON."), message: text });
      return;
    }
    const type = message?.MessageType;
    if (type === "HandshakeResponse") return this._handshaken(message);
    if (type === "ViolationResponse") return this._emit("badClientMessage", { diagnostics: message.Diagnostics });
    if (type === "ActionResponse") return this._actionResponse(message);
    const feed =
      typeof message?.FeedName === "string" && isObject(message.FeedArgs)
        ? this._feeds.get(feedKey(message.FeedName, message.FeedArgs))
        : undefined;
    const unexpected = () =>
      this._emit("badServerMessage", { error: new FeedmeError("UNEXPECTED_MESSAGE", `Unexpected ${type}.`), message });
    if (!feed) return unexpected();
    if (type === "FeedOpenResponse" && feed.state === "opening") {
      if (message.Success) {
        feed.state = "open";
        feed.data = message.FeedData;
        this._settle(feed, null, feed.data);
        this._emit("open", { feedName: feed.name, feedArgs: feed.args, data: feed.data });
      } else {
        feed.state = "closed";
        this._settle(feed, new FeedmeError(message.ErrorCode, "The server refused to open the feed.", message.ErrorData));
      }
    } else if (type === "FeedCloseResponse" && (feed.state === "closing" || feed.state === "terminated")) {
      feed.state = "closed";
      this._settle(feed, null, undefined);
    } else if (type === "ActionRevelation" && feed.state === "open") {
      this._revelation(feed, message);
    } else if (type === "ActionRevelation" && feed.state === "closing") {
      // discarded, as feedme-client does
    } else if (type === "FeedTermination" && feed.state === "open") {
      feed.state = "closed";
      feed.data = null;
      this._emit("close", {
        feedName: feed.name,
        feedArgs: feed.args,
        error: new FeedmeError("TERMINATED", "The server terminated the feed.", {
          errorCode: message.ErrorCode,
          errorData: message.ErrorData,
        }),
      });
    } else if (type === "FeedTermination" && feed.state === "closing") {
      feed.state = "terminated"; // the FeedCloseResponse follows
    } else {
      unexpected();
    }
  }

  _handshaken(message) {
    const waiter = this._handshake;
    this._handshake = null;
    if (!waiter) {
      this._emit("badServerMessage", { error: new FeedmeError("UNEXPECTED_MESSAGE", "Unexpected HandshakeResponse."), message });
    } else if (message.Success && message.Version === "0.1") {
      waiter.resolve();
    } else {
      waiter.reject(new FeedmeError("HANDSHAKE_REJECTED", "The server rejected the handshake."));
      this._socket.close();
    }
  }

  _actionResponse(message) {
    const pending = this._actions.get(message.CallbackId);
    if (!pending) {
      this._emit("badServerMessage", { error: new FeedmeError("UNEXPECTED_MESSAGE", "Unexpected ActionResponse."), message });
      return;
    }
    this._actions.delete(message.CallbackId);
    if (message.Success) pending.resolve(message.ActionData);
    else pending.reject(new FeedmeError(message.ErrorCode, "The action failed.", message.ErrorData));
  }

  _revelation(feed, message) {
    let newData;
    let problem = null;
    try {
      if (!Array.isArray(message.FeedDeltas)) throw new FeedmeError("INVALID_MESSAGE", "No FeedDeltas.");
      newData = applyDeltas(feed.data, message.FeedDeltas);
    } catch (error) {
      problem = new FeedmeError("INVALID_DELTA", "Received ActionRevelation with contextually invalid feed delta.", {
        deltaError: error.message,
      });
    }
    const checked = !problem && this.verifyMd5 && typeof message.FeedMd5 === "string";
    if (checked && feedMd5(newData) !== message.FeedMd5) {
      problem = new FeedmeError("INVALID_HASH", "Feed data MD5 verification failed.");
    }
    if (problem) {
      // As feedme-client: the feed closes (its "close" first, then "badServerMessage", in
      // feedme-client's order), and is reopened (3 times a minute at most).
      this._emit("close", {
        feedName: feed.name,
        feedArgs: feed.args,
        error: new FeedmeError("BAD_ACTION_REVELATION", problem.message),
      });
      this._emit("badServerMessage", { error: problem, message });
      const now = Date.now();
      feed.reopens = feed.reopens.filter((t) => now - t < REOPEN_WINDOW_MS);
      this._close(feed)
        .then(() => {
          if (feed.reopens.length >= REOPEN_MAX || this.state !== "connected") return;
          feed.reopens.push(now);
          return this._open(feed);
        })
        .catch(() => {});
      return;
    }
    const oldData = feed.data;
    feed.data = newData;
    this._emit("action", {
      feedName: feed.name,
      feedArgs: feed.args,
      actionName: message.ActionName,
      actionData: message.ActionData,
      deltas: message.FeedDeltas,
      oldData,
      newData,
      md5Checked: checked,
    });
  }

  _closed(socket, event) {
    if (socket !== this._socket) return;
    this._socket = null;
    this.state = "disconnected";
    const gone = new FeedmeError("DISCONNECTED", "The connection closed.");
    this._handshake?.reject(gone);
    this._handshake = null;
    for (const pending of this._actions.values()) pending.reject(gone);
    this._actions.clear();
    for (const feed of this._feeds.values()) {
      const wasOpen = feed.state === "open";
      feed.state = "closed";
      feed.data = null;
      this._settle(feed, gone);
      if (wasOpen) this._emit("close", { feedName: feed.name, feedArgs: feed.args, error: gone });
    }
    this._feeds.clear();
    this._emit("disconnect", { code: event.code, reason: event.reason, wasClean: event.wasClean });
  }
}
