// Drives the unmodified feedme-client 0.0.35 against a Tidings server and prints one JSON
// line per observation. Usage: node scenario.js ws://host:port/ [token]
"use strict";
const feedmeClient = require("feedme-client");
const feedmeTransportWs = require("feedme-transport-ws/client");

const [url, token] = process.argv.slice(2);
const out = (kind, data) => process.stdout.write(JSON.stringify({ kind, ...data }) + "\n");
const deadline = setTimeout(() => { out("timeout", {}); process.exit(2); }, 20000);

function once(emitter, event, test = () => true) {
  return new Promise((resolve) => {
    const handler = (...args) => {
      if (!test(...args)) return;
      emitter.removeListener(event, handler);
      resolve(args);
    };
    emitter.on(event, handler);
  });
}
const describe = (err) => err && { message: err.message, code: err.serverErrorCode, data: err.serverErrorData };

async function main() {
  const address = token ? `${url}?token=${token}` : url;
  const client = feedmeClient({
    transport: feedmeTransportWs(address),
    connectRetryMs: 50, connectRetryBackoffMs: 0, reopenMaxAttempts: 5,
  });
  client.on("badServerMessage", (err) => out("badServerMessage", { message: err.message }));
  const connected = once(client, "connect");
  client.connect();
  await connected;
  out("connect", { state: client.state() });

  out("echo", { data: await client.action("echo", { a: "1" }) });
  try { await client.action("fail", {}); out("fail", { unexpected: true }); }
  catch (err) { out("fail", describe(err)); }

  const feed = client.feed("counter", {});
  const opened = once(feed, "open");
  feed.desireOpen();
  await opened;
  out("open", { data: feed.data() });

  const revealed = once(feed, "action");
  await client.action("bump", {});
  const [name, actionData, newData, oldData] = await revealed;
  out("action", { name, actionData, newData, oldData });

  const closedOnBadHash = once(feed, "close");
  const reopened = once(feed, "open");
  await client.action("badhash", {});
  const [badClose] = await closedOnBadHash;
  out("badHashClose", describe(badClose));
  await reopened;
  out("reopened", { data: feed.data() });

  const terminated = once(feed, "close");
  await client.action("terminate", {});
  const [termination] = await terminated;
  out("terminated", describe(termination));

  const openAgain = once(feed, "open");
  feed.desireClosed();
  feed.desireOpen();
  await openAgain;
  out("openAfterTermination", { state: feed.state() });

  const dropped = once(client, "disconnect");
  const back = once(client, "connect");
  const reopenAfterReconnect = once(feed, "open");
  client.action("kick", {}).catch(() => {});
  const [dropErr] = await dropped;
  out("disconnect", { message: dropErr && dropErr.message });
  await back;
  await reopenAfterReconnect;
  out("reconnectedAndReopened", { state: feed.state(), data: feed.data() });

  const closed = once(feed, "close");
  feed.desireClosed();
  const [closeArg] = await closed;
  out("closed", { err: closeArg === undefined ? null : describe(closeArg) });

  const gone = once(client, "disconnect");
  client.disconnect();
  await gone;
  out("done", {});
  clearTimeout(deadline);
}

main().catch((err) => { out("error", { message: String(err && err.stack || err) }); process.exit(1); });
