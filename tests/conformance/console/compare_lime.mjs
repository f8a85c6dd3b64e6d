// Runs the console's own lime.js and the unmodified npm lime-js 3.0.1 (+ lime-transport-websocket
// 2.0.3, from ../lime/node_modules) side by side against a running Tidings server.
//
//   node compare_lime.mjs <scenario> '<json args>'
//
// args: ws, domain, timeoutMs, consoleDir (a folder holding lime.js + listeners.js as ES
// modules), and per scenario the accounts. Prints one JSON line: {"ok": true, ...} with the raw
// envelopes each client saw, or {"ok": false, "error": "..."}. The pytest side
// (tests/conformance/test_console_clients.py) normalizes and compares them. Waiting is event
// driven (a promise per expected envelope, rejected after timeoutMs); no sleeps.

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { BrowserWebSocket } from "./browser_websocket.mjs";
import { withTimeout as bound } from "./timeout.mjs";

const require = createRequire(new URL("../lime/package.json", import.meta.url));
const Lime = require("lime-js");
const WebSocketTransport = require("lime-transport-websocket");

const [, , scenarioName, rawArgs] = process.argv;
const args = JSON.parse(rawArgs || "{}");
const TIMEOUT = args.timeoutMs || 5000;
const { LimeClient, LimeError, newId } = await import(pathToFileURL(`${args.consoleDir}/lime.js`).href);

const b64 = (text) => Buffer.from(text, "utf8").toString("base64");
const copy = (value) => JSON.parse(JSON.stringify(value));

const withTimeout = (promise, what) => bound(promise, what, TIMEOUT);

// One client of either kind behind one interface, recording every message, notification and
// command its application sees; wait() resolves on the first unconsumed one that matches.
class Side {
  constructor(kind, label) {
    this.kind = kind;
    this.label = label;
    this.inbox = { message: [], notification: [], command: [], session: [] };
    this.waiters = [];
  }

  push(type, envelope) {
    const entry = { envelope: copy(envelope), taken: false };
    this.inbox[type].push(entry);
    for (const waiter of this.waiters) {
      if (!waiter.done && waiter.type === type && waiter.predicate(entry.envelope)) {
        waiter.done = true;
        entry.taken = true;
        waiter.resolve(entry.envelope);
        break;
      }
    }
    this.waiters = this.waiters.filter((w) => !w.done);
  }

  wait(type, predicate, what) {
    const found = this.inbox[type].find((e) => !e.taken && predicate(e.envelope));
    if (found) {
      found.taken = true;
      return Promise.resolve(found.envelope);
    }
    const waiter = { type, predicate, done: false };
    const promise = new Promise((resolve) => { waiter.resolve = resolve; });
    this.waiters.push(waiter);
    return withTimeout(promise, `${this.label} (${this.kind}): ${what}`).catch((error) => {
      waiter.done = true;
      throw error;
    });
  }

  all(type) {
    return this.inbox[type].map((e) => e.envelope);
  }

  /** Establish a session; resolves with {established} or {failed} (the failed session). */
  async connect(spec) {
    const identity = `${spec.name}@${args.domain}`;
    if (this.kind === "ours") {
      const client = new LimeClient(args.ws, { WebSocket: BrowserWebSocket, commandTimeout: TIMEOUT });
      this.client = client;
      for (const type of ["message", "notification", "command", "session"]) {
        client.on(type, (envelope) => this.push(type, envelope));
      }
      try {
        const established = await withTimeout(
          client.connect({ identity, password: spec.password, instance: spec.instance }),
          `${this.label}: established`,
        );
        this.node = client.localNode;
        return { established: copy(established) };
      } catch (error) {
        if (error instanceof LimeError && error.envelope) return { failed: copy(error.envelope) };
        throw error;
      }
    }
    const transport = new WebSocketTransport();
    transport.onClose = () => {};
    await withTimeout(transport.open(args.ws), `${this.label}: websocket open`);
    const channel = new Lime.ClientChannel(transport, true, true);
    this.channel = channel;
    channel.onMessage = (m) => this.push("message", m);
    channel.onNotification = (n) => this.push("notification", n);
    channel.onCommand = (c) => this.push("command", c);
    try {
      const established = await withTimeout(
        channel.establishSession(
          Lime.SessionCompression.NONE, Lime.SessionEncryption.NONE, identity,
          new Lime.PlainAuthentication(b64(spec.password)), spec.instance,
        ),
        `${this.label}: established`,
      );
      this.node = channel.localNode;
      return { established: copy(established) };
    } catch (error) {
      if (error instanceof Error) throw error;
      try { transport.close(); } catch { /* already closed by the server */ }
      return { failed: copy(error) }; // lime-js rejects with the failed session envelope
    }
  }

  sendMessage(message) {
    if (this.kind === "ours") this.client.sendMessage(message);
    else this.channel.sendMessage(message);
  }

  sendNotification(notification) {
    if (this.kind === "ours") this.client.sendNotification(notification);
    else this.channel.sendNotification(notification);
  }

  /** Resolves with the response envelope, success or failure alike. */
  async command(command) {
    const full = { id: newId(), ...command };
    if (this.kind === "npm") {
      return copy(await withTimeout(this.channel.processCommand(full, TIMEOUT), `${this.label}: ${full.method} ${full.uri}`));
    }
    try {
      return copy(await this.client.sendCommand(full));
    } catch (error) {
      if (error instanceof LimeError && error.envelope) return copy(error.envelope);
      throw error;
    }
  }

  async setReceipt(events) {
    return this.command({
      method: "set", uri: "/receipt", type: "application/vnd.lime.receipt+json", resource: { events },
    });
  }

  async finish() {
    if (this.kind === "ours") {
      return copy(await withTimeout(this.client.finish(), `${this.label}: finished`));
    }
    return copy(await withTimeout(this.channel.sendFinishingSession(), `${this.label}: finished`));
  }
}

async function open(kind, spec, label) {
  const side = new Side(kind, label);
  const result = await side.connect(spec);
  if (result.failed) throw new Error(`${label}: session failed ${JSON.stringify(result.failed)}`);
  side.established = result.established;
  return side;
}

const KINDS = ["ours", "npm"];

const scenarios = {
  // Sign in, finish; and a wrong password, with each client.
  async session() {
    const out = {};
    for (const kind of KINDS) {
      const spec = args.accounts[kind];
      const side = new Side(kind, `signin-${kind}`);
      const good = await side.connect(spec);
      const node = side.node;
      const finished = await side.finish();
      const wrong = await new Side(kind, `wrong-${kind}`).connect({ ...spec, password: `${spec.password}-wrong` });
      out[kind] = { node, established: good.established, finished, wrong };
    }
    return out;
  },

  // An our-client session and an npm-client session exchange messages both ways, with every
  // receipt on, each consuming what it gets.
  async exchange() {
    const sides = {};
    for (const kind of KINDS) sides[kind] = await open(kind, args.accounts[kind], kind);
    const out = {};
    for (const kind of KINDS) {
      out[kind] = { node: sides[kind].node, receipt: await sides[kind].setReceipt(["accepted", "dispatched", "received", "consumed"]) };
    }
    const sent = { ours: [], npm: [] };
    for (const kind of KINDS) {
      const peer = kind === "ours" ? "npm" : "ours";
      const to = `${args.accounts[peer].name}@${args.domain}`;
      for (const message of args.messages) {
        const id = newId();
        sides[kind].sendMessage({ id, to, ...message });
        sent[kind].push(id);
      }
    }
    for (const kind of KINDS) {
      const peer = kind === "ours" ? "npm" : "ours";
      const received = [];
      for (const id of sent[peer]) {
        const message = await sides[kind].wait("message", (m) => m.id === id, `message ${id}`);
        sides[kind].sendNotification({ id, to: message.from, event: "consumed" });
        received.push(message);
      }
      out[kind].received = received;
    }
    for (const kind of KINDS) {
      for (const id of sent[kind]) await sides[kind].wait("notification", (n) => n.id === id && n.event === "consumed", `consumed ${id}`);
      out[kind].sent = sent[kind];
      out[kind].notifications = sent[kind].map((id) => sides[kind].all("notification").filter((n) => n.id === id));
      out[kind].unexpectedMessages = sides[kind].all("message").filter((m) => !sent.ours.includes(m.id) && !sent.npm.includes(m.id));
    }
    // Each pings the other's node: both answer automatically (autoReplyPings).
    for (const kind of KINDS) {
      const peer = kind === "ours" ? "npm" : "ours";
      out[kind].peerPing = await sides[kind].command({ method: "get", uri: "/ping", to: sides[peer].node });
    }
    for (const kind of KINDS) out[kind].finished = await sides[kind].finish();
    return out;
  },

  // The same commands from each client, on accounts that start alike.
  async commands() {
    const out = {};
    for (const kind of KINDS) {
      const side = await open(kind, args.accounts[kind], kind);
      const responses = [];
      for (const command of args.commands) responses.push(await side.command(command));
      out[kind] = { node: side.node, responses };
      await side.finish();
    }
    return out;
  },

  // A message to an account that does not exist, from each client.
  async unknownRecipient() {
    const out = {};
    for (const kind of KINDS) {
      const side = await open(kind, args.accounts[kind], kind);
      const id = newId();
      side.sendMessage({ id, to: args.to, type: "text/plain", content: "anyone?" });
      const failed = await side.wait("notification", (n) => n.id === id && n.event === "failed", `failed ${id}`);
      out[kind] = { node: side.node, id, failed };
      await side.finish();
    }
    return out;
  },
};

try {
  const scenario = scenarios[scenarioName];
  if (!scenario) throw new Error(`unknown scenario ${scenarioName}`);
  const result = await scenario();
  process.stdout.write(`${JSON.stringify({ ok: true, ...result })}\n`);
  process.exit(0);
} catch (error) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: String(error?.stack ?? error) })}\n`);
  process.exit(1);
}
