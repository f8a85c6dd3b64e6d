// Runs the console's own feedme.js and the unmodified npm feedme-client 0.0.35 (+
// feedme-transport-ws 0.0.4, from ../feedme/node_modules) side by side against a running
// Tidings server with tests/conformance/console_feed_app.py loaded.
//
//   node compare_feedme.mjs '<json args>'
//
// args: ws, consoleDir (lime.js/feedme.js/listeners.js as ES modules), timeoutMs, room, steps.
// Both clients open feed `doc` {room}; each step is invoked by one client in turn and both
// wait for its revelation; then a revelation with a bad FeedMd5 (both close and reopen the
// feed), a failing action, a refused feed, and a termination. Each client's observations go
// into one log of plain events; prints {"ok": true, "ours": {...}, "npm": {...}}.

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { BrowserWebSocket } from "./browser_websocket.mjs";
import { withTimeout as bound } from "./timeout.mjs";

const require = createRequire(new URL("../feedme/package.json", import.meta.url));
const feedmeClient = require("feedme-client");
const feedmeTransportWs = require("feedme-transport-ws/client");

const args = JSON.parse(process.argv[2] || "{}");
const TIMEOUT = args.timeoutMs || 5000;
const { FeedmeClient, FeedmeError } = await import(pathToFileURL(`${args.consoleDir}/feedme.js`).href);
const FEED = "doc";
const ARGS = { room: args.room };
const copy = (value) => (value === undefined ? null : JSON.parse(JSON.stringify(value)));
const codeOf = (message) => String(message).split(":")[0];

const withTimeout = (promise, what) => bound(promise, what, TIMEOUT);

// One client of either kind: connect, open/close the room's feed, call actions; every event
// of the room's feed is logged as {event, ...} in the same shape for both kinds.
class Side {
  constructor(kind) {
    this.kind = kind;
    this.log = [];
    this.waiters = [];
  }

  record(entry) {
    this.log.push(entry);
    const index = this.log.length - 1;
    for (const waiter of this.waiters) {
      if (!waiter.done && index >= waiter.from && waiter.predicate(entry)) {
        waiter.done = true;
        waiter.resolve(entry);
      }
    }
    this.waiters = this.waiters.filter((w) => !w.done);
  }

  /** The first log entry from `from` on that matches (logged already or still to come). */
  wait(predicate, from, what) {
    const found = this.log.slice(from).find(predicate);
    if (found) return Promise.resolve(found);
    const waiter = { predicate, from, done: false };
    const promise = new Promise((resolve) => { waiter.resolve = resolve; });
    this.waiters.push(waiter);
    return withTimeout(promise, `${this.kind}: ${what}`);
  }

  async connect() {
    if (this.kind === "ours") {
      const client = new FeedmeClient(args.ws, { WebSocket: BrowserWebSocket, timeout: TIMEOUT });
      this.client = client;
      const mine = (e) => e.feedName === FEED && e.feedArgs.room === ARGS.room;
      client.on("open", (e) => mine(e) && this.record({ event: "open", data: copy(e.data) }));
      client.on("action", (e) => mine(e) && this.record({
        event: "action", name: e.actionName, actionData: copy(e.actionData),
        newData: copy(e.newData), oldData: copy(e.oldData),
      }));
      client.on("close", (e) => mine(e) && this.record({
        event: "close", code: e.error.code,
        serverCode: e.error.data?.errorCode ?? null, serverData: copy(e.error.data?.errorData),
      }));
      client.on("badServerMessage", (e) => this.record({ event: "badServerMessage", code: e.error.code }));
      await withTimeout(client.connect(), "ours: connect");
      return;
    }
    const client = feedmeClient({ transport: feedmeTransportWs(args.ws), connectRetryMs: -1 });
    this.client = client;
    client.on("badServerMessage", (err) => this.record({ event: "badServerMessage", code: codeOf(err.message) }));
    const connected = new Promise((resolve) => client.once("connect", resolve));
    client.connect();
    await withTimeout(connected, "npm: connect");
    const feed = client.feed(FEED, ARGS);
    this.feed = feed;
    feed.on("open", () => this.record({ event: "open", data: copy(feed.data()) }));
    feed.on("action", (name, actionData, newData, oldData) => this.record({
      event: "action", name, actionData: copy(actionData), newData: copy(newData), oldData: copy(oldData),
    }));
    feed.on("close", (err) => {
      if (err === undefined) return; // closed as desired (desireClosed)
      this.record({
        event: "close", code: codeOf(err.message),
        serverCode: err.serverErrorCode ?? null, serverData: copy(err.serverErrorData),
      });
    });
  }

  async open() {
    const from = this.log.length;
    if (this.kind === "ours") {
      await withTimeout(this.client.openFeed(FEED, ARGS), "ours: open");
    } else {
      this.feed.desireOpen();
    }
    return this.wait((e) => e.event === "open", from, "open");
  }

  state() {
    return this.kind === "ours" ? this.client.feedState(FEED, ARGS) : this.feed.state();
  }

  /** {data} or {serverCode, serverData} */
  async action(name, actionArgs) {
    try {
      return { data: copy(await withTimeout(this.client.action(name, actionArgs), `${this.kind}: action ${name}`)) };
    } catch (err) {
      if (this.kind === "ours") {
        if (!(err instanceof FeedmeError)) throw err;
        return { serverCode: err.code, serverData: copy(err.data) };
      }
      if (err.serverErrorCode === undefined) throw err;
      return { code: codeOf(err.message), serverCode: err.serverErrorCode, serverData: copy(err.serverErrorData) };
    }
  }

  /** Open a feed the server refuses: {serverCode, serverData}. */
  async refused(feedArgs) {
    if (this.kind === "ours") {
      try {
        await withTimeout(this.client.openFeed(FEED, feedArgs), "ours: refused open");
        return { opened: true };
      } catch (err) {
        if (!(err instanceof FeedmeError)) throw err;
        return { serverCode: err.code, serverData: copy(err.data), state: this.client.feedState(FEED, feedArgs) };
      }
    }
    const feed = this.client.feed(FEED, feedArgs);
    const outcome = withTimeout(new Promise((resolve) => {
      feed.once("open", () => resolve({ opened: true }));
      feed.once("close", (err) => resolve({
        code: codeOf(err.message), serverCode: err.serverErrorCode, serverData: copy(err.serverErrorData),
      }));
    }), "npm: refused open");
    feed.desireOpen();
    const result = await outcome;
    feed.desireClosed();
    return { ...result, state: feed.state() };
  }

  disconnect() {
    this.client.disconnect();
  }
}

async function both(what, act) {
  return Object.fromEntries(await Promise.all(KINDS.map(async (kind) => [kind, await act(sides[kind], kind)])));
}

const KINDS = ["ours", "npm"];
const sides = { ours: new Side("ours"), npm: new Side("npm") };

try {
  const out = { ours: {}, npm: {} };
  await both("connect", (side) => side.connect());
  await both("open", (side) => side.open());
  const actionResults = [];
  for (const [n, step] of args.steps.entries()) {
    const marks = { ours: sides.ours.log.length, npm: sides.npm.log.length };
    const invoker = sides[KINDS[n % 2]];
    actionResults.push({ by: invoker.kind, result: await invoker.action("step", { ...ARGS, step }) });
    await both(step, (side, kind) => side.wait((e) => e.event === "action" && e.name === step, marks[kind], `action ${step}`));
  }
  const dataBeforeBadHash = await both("data", (side) => copy(side.kind === "ours" ? side.client.feedData(FEED, ARGS) : side.feed.data()));
  // A revelation whose FeedMd5 is wrong: each closes the feed and reopens it.
  const marks = { ours: sides.ours.log.length, npm: sides.npm.log.length };
  await sides.npm.action("badhash", ARGS);
  await both("reopen", async (side, kind) => {
    const closed = await side.wait((e) => e.event === "close", marks[kind], "close on the bad hash");
    return side.wait((e) => e.event === "open", marks[kind] + side.log.slice(marks[kind]).indexOf(closed), "reopen");
  });
  // Revelations apply again after the reopen.
  const again = { ours: sides.ours.log.length, npm: sides.npm.log.length };
  await sides.ours.action("step", { ...ARGS, step: "count" });
  await both("after reopen", (side, kind) => side.wait((e) => e.event === "action" && e.name === "count", again[kind], "count after the reopen"));
  const failed = await both("fail", (side) => side.action("fail", { x: "1" }));
  const refused = await both("refused", (side) => side.refused({ room: "forbidden" }));
  const ended = { ours: sides.ours.log.length, npm: sides.npm.log.length };
  await sides.ours.action("terminate", ARGS);
  await both("terminated", (side, kind) => side.wait((e) => e.event === "close" && e.code === "TERMINATED", ended[kind], "termination"));
  const stateAfter = await both("state", (side) => side.state());
  for (const kind of KINDS) {
    out[kind] = {
      log: sides[kind].log,
      dataBeforeBadHash: dataBeforeBadHash[kind],
      failed: failed[kind],
      refused: refused[kind],
      stateAfterTermination: stateAfter[kind],
    };
    sides[kind].disconnect();
  }
  out.actionResults = actionResults;
  process.stdout.write(`${JSON.stringify({ ok: true, ...out })}\n`);
  process.exit(0);
} catch (error) {
  const logs = { ours: sides.ours.log, npm: sides.npm.log };
  process.stdout.write(`${JSON.stringify({ ok: false, error: String(error?.stack ?? error), logs })}\n`);
  process.exit(1);
}
