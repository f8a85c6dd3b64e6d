// The unmodified feedme-client watching one feed until an action named "end" is revealed
// (tests/cluster: a feed with subscribers on every node). Prints one JSON line per
// observation: "open" (with the data), each "action" (name, data, new data), then "done";
// "close" or "badServerMessage" if the feed closes (a bad FeedMd5 closes it) or the server
// sends something invalid. Usage: node watch_feed.js ws://host:port/ FEED_NAME [TIMEOUT_MS]
"use strict";
const feedmeClient = require("feedme-client");
const feedmeTransportWs = require("feedme-transport-ws/client");

const [url, feedName, timeoutMs] = process.argv.slice(2);
const out = (kind, data) => process.stdout.write(JSON.stringify({ kind, ...data }) + "\n");
const deadline = setTimeout(() => { out("timeout", {}); process.exit(2); }, Number(timeoutMs || "30000"));
const describe = (err) => err && { message: err.message, code: err.serverErrorCode, data: err.serverErrorData };

async function main() {
  const client = feedmeClient({
    transport: feedmeTransportWs(url),
    connectRetryMs: -1, reopenMaxAttempts: 0,
  });
  client.on("badServerMessage", (err) => out("badServerMessage", { message: err.message }));
  const connected = new Promise((resolve) => client.once("connect", resolve));
  client.connect();
  await connected;
  const feed = client.feed(feedName, {});
  const ended = new Promise((resolve) => {
    feed.on("action", (name, actionData, newData) => {
      out("action", { name, actionData, newData });
      if (name === "end") resolve();
    });
    feed.on("close", (err) => { out("close", describe(err) || {}); resolve(); });
  });
  const opened = new Promise((resolve) => feed.once("open", resolve));
  feed.desireOpen();
  await opened;
  out("open", { data: feed.data() });
  await ended;
  const gone = new Promise((resolve) => client.once("disconnect", resolve));
  client.disconnect();
  await gone;
  out("done", {});
  clearTimeout(deadline);
}

main().catch((err) => { out("error", { message: String(err && err.stack || err) }); process.exit(1); });
