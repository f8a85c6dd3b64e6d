// The Tidings console's live feed viewer: open a feed over Feedme (feedme.js) and show its
// document as formatted JSON, updated by every revelation, until it is closed.
import { FeedmeClient } from "/console/feedme.js";

const $ = (id) => document.getElementById(id);

const state = {
  config: null, // {ws, domain}
  client: null,
  token: null, // the API key the client connected with ("" for none)
  feed: null, // {name, args} while open or opening
  revision: 0,
};

function status(text, error = false) {
  $("feed-status").textContent = text;
  $("feed-status").classList.toggle("ok", !error);
}

function show(data) {
  $("feed-data").textContent = data === null ? "" : JSON.stringify(data, null, 2);
}

function meta(text) {
  $("feed-meta").textContent = text;
}

function describe(feed) {
  const args = Object.entries(feed.args).map(([k, v]) => `${k}=${v}`).join(", ");
  return args ? `${feed.name} (${args})` : feed.name;
}

function setOpen(open) {
  $("open-feed").disabled = open;
  $("close-feed").disabled = !open;
  $("feed-name").disabled = open;
  $("feed-args").disabled = open;
  $("feed-token").disabled = open;
}

/** The args as typed: a JSON object of strings, or an Error saying what is wrong. */
function parseArgs(text) {
  let args;
  try {
    args = JSON.parse(text.trim() || "{}");
  } catch {
    return new Error("Args are not JSON.");
  }
  if (args === null || typeof args !== "object" || Array.isArray(args)) {
    return new Error("Args must be a JSON object.");
  }
  if (!Object.values(args).every((v) => typeof v === "string")) {
    return new Error("Every arg value must be a string.");
  }
  return args;
}

/** A connected client for this API key (a new connection when the key changed). */
async function connected(token) {
  if (state.client && state.client.state === "connected" && state.token === token) {
    return state.client;
  }
  state.client?.disconnect();
  const url = token ? `${state.config.ws}?token=${encodeURIComponent(token)}` : state.config.ws;
  const client = new FeedmeClient(url);
  client.on("action", (action) => {
    if (!state.feed) return;
    state.revision += 1;
    show(action.newData);
    const checked = action.md5Checked ? ", MD5 verified" : "";
    meta(`Revision ${state.revision}: action ${action.actionName}${checked}`);
  });
  client.on("open", ({ data }) => {
    if (state.feed) show(data); // also after an automatic reopen
  });
  client.on("close", ({ error }) => {
    if (!state.feed) return;
    if (error.code === "BAD_ACTION_REVELATION") {
      status(`Reopening the feed: ${error.message}`, true);
      return;
    }
    const detail = error.data?.errorCode ? ` (${error.data.errorCode})` : "";
    status(`The feed was closed: ${error.message}${detail}`, true);
    state.feed = null;
    setOpen(false);
  });
  client.on("disconnect", () => {
    if (state.client === client) state.client = null;
  });
  state.client = client;
  state.token = token;
  await client.connect();
  return client;
}

async function openFeed(event) {
  event.preventDefault();
  const name = $("feed-name").value.trim();
  const args = parseArgs($("feed-args").value);
  if (!name) return status("Enter a feed name.", true);
  if (args instanceof Error) return status(args.message, true);
  setOpen(true);
  $("close-feed").disabled = true;
  status(`Opening ${describe({ name, args })}…`);
  try {
    const client = await connected($("feed-token").value);
    state.feed = { name, args };
    state.revision = 0;
    const data = await client.openFeed(name, args);
    show(data);
    meta("Revision 0: the document as opened");
    status(`Open: ${describe(state.feed)}`);
    $("close-feed").disabled = false;
  } catch (error) {
    state.feed = null;
    setOpen(false);
    const reason = error.data?.message ? ` (${error.data.message})` : "";
    status(`Could not open the feed: ${error.code ?? error.message}${reason}`, true);
  }
}

async function closeFeed() {
  const feed = state.feed;
  if (!feed || !state.client) return;
  $("close-feed").disabled = true;
  try {
    await state.client.closeFeed(feed.name, feed.args);
    status(`Closed: ${describe(feed)}`);
  } catch (error) {
    status(`Could not close the feed: ${error.message}`, true);
  }
  state.feed = null;
  setOpen(false);
  meta("");
  show(null);
  $("feed-name").focus();
}

async function main() {
  const response = await fetch("/console/config.json", { cache: "no-store" });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  state.config = await response.json();
  $("feed-form").addEventListener("submit", openFeed);
  $("close-feed").addEventListener("click", closeFeed);
  $("open-feed").disabled = false;
  $("feed-name").focus();
}

main().catch((error) => status(`The viewer could not start: ${error.message}`, true));
