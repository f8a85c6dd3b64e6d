// The unmodified feedme-client opening an account's own feed ~name/FEED with an API key, then
// applying the revelations the server sends when the owner publishes. Prints one JSON line per
// observation. Usage: node owner_feed.js ws://host:port/ TOKEN FEED_NAME [REVELATIONS]
"use strict";
const feedmeClient = require("feedme-client");
const feedmeTransportWs = require("feedme-transport-ws/client");

const [url, token, feedName, wanted] = process.argv.slice(2);
const revelations = Number(wanted || "1");
const out = (kind, data) => process.stdout.write(JSON.stringify({ kind, ...data }) + "\n");
const deadline = setTimeout(() => { out("timeout", {}); process.exit(2); }, 20000);
const describe = (err) => err && { message: err.message, code: err.serverErrorCode, data: err.serverErrorData };

async function main() {
  const client = feedmeClient({
    transport: feedmeTransportWs(`${url}?token=${token}`),
    connectRetryMs: -1, reopenMaxAttempts: 0,
  });
  client.on("badServerMessage", (err) => out("badServerMessage", { message: err.message }));
  const connected = new Promise((resolve) => client.once("connect", resolve));
  client.connect();
  await connected;
  out("connect", { state: client.state() });

  const feed = client.feed(feedName, {});
  const outcome = new Promise((resolve) => {
    feed.once("open", () => resolve(null));
    feed.once("close", (err) => resolve(err || new Error("closed")));
  });
  feed.desireOpen();
  const refused = await outcome;
  if (refused) {
    out("refused", describe(refused));
  } else {
    out("open", { data: feed.data() });
    let seen = 0;
    await new Promise((resolve) => {
      feed.on("action", (name, actionData, newData, oldData) => {
        out("action", { name, actionData, newData, oldData });
        if (++seen >= revelations) resolve();
      });
      feed.on("close", (err) => { out("close", describe(err) || {}); resolve(); });
    });
  }
  const gone = new Promise((resolve) => client.once("disconnect", resolve));
  client.disconnect();
  await gone;
  out("done", {});
  clearTimeout(deadline);
}

main().catch((err) => { out("error", { message: String(err && err.stack || err) }); process.exit(1); });
