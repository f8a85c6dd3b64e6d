// The Tidings web console: sign in over LIME (lime.js), chat live with delivery ticks, and
// the consent view (consent.js) on the same session.
import { LimeClient, identityOf, newId } from "/console/lime.js";
import { CHAT_TYPE, openOffer, setUpConsent, startConsent, stopConsent } from "/console/consent.js";

const $ = (id) => document.getElementById(id);
const RECEIPT = ["accepted", "dispatched", "received"];
const TICKS = { 0: "…", 1: "✓", 2: "✓✓" };
const TICK_LABELS = { 0: "sending", 1: "accepted by the server", 2: "received" };

const state = {
  config: null, // {ws, domain}
  client: null,
  me: null, // identity name@domain
  conversations: new Map(), // peer identity (lower case) -> {peer, items: [], unread}
  sent: new Map(), // message id -> item
  current: null, // peer key
  signingOut: false,
  lastFailure: null, // the reason of a session the server failed (taken over, shut down)
};

async function loadConfig() {
  const response = await fetch("/console/config.json", { cache: "no-store" });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  state.config = await response.json();
  $("domain-suffix").textContent = `@${state.config.domain}`;
}

/** A browser's own instance name, kept across reloads (a second tab with the same one would
 * take the session over). */
function instanceName() {
  let instance = null;
  try {
    instance = localStorage.getItem("tidings.instance");
    if (!instance) {
      instance = `console-${newId().slice(0, 8)}`;
      localStorage.setItem("tidings.instance", instance);
    }
  } catch {
    instance = `console-${newId().slice(0, 8)}`;
  }
  return instance;
}

function qualified(text) {
  const value = text.trim();
  return value.includes("@") ? value : `${value}@${state.config.domain}`;
}

async function signIn(event) {
  event.preventDefault();
  const status = $("sign-in-status");
  const button = $("sign-in-button");
  status.textContent = "";
  button.disabled = true;
  const identity = qualified($("name").value);
  const client = new LimeClient(state.config.ws);
  try {
    await client.connect({
      identity,
      password: $("password").value,
      instance: instanceName(),
    });
    client.on("message", received);
    client.on("notification", notified);
    client.on("close", closed);
    client.on("session", (session) => {
      if (session.state === "failed" && session.reason) {
        state.lastFailure = `${session.reason.description} (${session.reason.code})`;
      }
    });
    await client.setReceipt(RECEIPT);
  } catch (error) {
    client.close();
    status.textContent = `Could not sign in: ${error.message}`;
    button.disabled = false;
    $("password").focus();
    return;
  }
  button.disabled = false;
  state.client = client;
  state.me = identityOf(client.localNode);
  $("password").value = "";
  showChat();
  startConsent(client, state.me).then(() => {
    const offer = offerInHash();
    if (offer !== null && state.client === client) {
      showView("consent");
      openOffer(offer);
    }
  });
}

/** The capability link of `#offer=<url>` in the page's address, or null. */
function offerInHash() {
  const hash = window.location.hash;
  if (!hash.startsWith("#offer=")) return null;
  const value = hash.slice("#offer=".length);
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function showView(which) {
  const consent = which === "consent";
  $("chat-view").hidden = consent;
  $("consent-view").hidden = !consent;
  $("show-chat").setAttribute("aria-pressed", String(!consent));
  $("show-consent").setAttribute("aria-pressed", String(consent));
}

function showChat() {
  $("sign-in-view").hidden = true;
  $("chat-view").hidden = false;
  $("views").hidden = false;
  showView("chat");
  $("whoami").textContent = `Signed in as ${state.me}`;
  $("whoami").hidden = false;
  $("sign-out").hidden = false;
  $("chat-status").textContent = "";
  $("peer").focus();
}

function showSignIn(message) {
  state.client = null;
  state.me = null;
  state.conversations.clear();
  state.sent.clear();
  state.current = null;
  $("peer-list").replaceChildren();
  $("messages").replaceChildren();
  $("conversation-title").textContent = "No conversation open";
  $("text").disabled = true;
  $("send").disabled = true;
  stopConsent();
  $("chat-view").hidden = true;
  $("consent-view").hidden = true;
  $("views").hidden = true;
  $("whoami").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in-view").hidden = false;
  $("sign-in-status").textContent = message || "";
  $("name").focus();
}

async function signOut() {
  const client = state.client;
  state.signingOut = true;
  try {
    if (client !== null) await client.finish();
  } catch {
    // the connection is gone already: signed out all the same
  } finally {
    state.signingOut = false;
    showSignIn("");
  }
}

function closed(event) {
  if (state.signingOut || state.client === null) return;
  const why = state.lastFailure ?? `the connection closed (${event.code})`;
  state.lastFailure = null;
  showSignIn(`Signed out: ${why}. Sign in again.`);
}

function conversation(identity) {
  const key = identity.toLowerCase();
  let found = state.conversations.get(key);
  if (found === undefined) {
    found = { peer: identity, items: [], unread: 0 };
    state.conversations.set(key, found);
    renderPeers();
  }
  return found;
}

function openConversation(identity) {
  const chat = conversation(identity);
  state.current = chat.peer.toLowerCase();
  chat.unread = 0;
  $("conversation-title").textContent = `Chat with ${chat.peer}`;
  $("messages").replaceChildren(...chat.items.map((item) => item.element));
  $("text").disabled = false;
  $("send").disabled = false;
  renderPeers();
  scrollDown();
  $("text").focus();
}

function renderPeers() {
  const items = [];
  for (const [key, chat] of state.conversations) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = chat.peer;
    button.dataset.peer = chat.peer;
    if (key === state.current) button.setAttribute("aria-current", "true");
    if (chat.unread > 0) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(chat.unread);
      badge.setAttribute("aria-label", `${chat.unread} unread`);
      button.append(badge);
    }
    button.addEventListener("click", () => openConversation(chat.peer));
    const entry = document.createElement("li");
    entry.append(button);
    items.push(entry);
  }
  $("peer-list").replaceChildren(...items);
}

function bubble(text, mine) {
  const element = document.createElement("li");
  element.className = mine ? "message mine" : "message theirs";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  element.append(body);
  return element;
}

function setTicks(item, ticks) {
  if (item.failed || ticks <= item.ticks) return;
  item.ticks = ticks;
  const mark = item.element.querySelector(".ticks");
  mark.dataset.ticks = String(ticks);
  mark.textContent = TICKS[ticks];
  mark.setAttribute("aria-label", TICK_LABELS[ticks]);
  mark.title = TICK_LABELS[ticks];
}

function addItem(chat, item) {
  chat.items.push(item);
  if (chat.peer.toLowerCase() === state.current) {
    $("messages").append(item.element);
    scrollDown();
  } else if (!item.mine) {
    chat.unread += 1;
    renderPeers();
  }
}

function scrollDown() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function send(event) {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  if (state.client === null || state.current === null || text.trim() === "") return;
  const chat = state.conversations.get(state.current);
  const element = bubble(text, true);
  const mark = document.createElement("span");
  mark.className = "ticks";
  element.append(mark);
  const item = { element, mine: true, ticks: -1, failed: false };
  let id;
  try {
    id = state.client.sendMessage({ to: chat.peer, type: "text/plain", content: text });
  } catch (error) {
    $("chat-status").textContent = `Not sent: ${error.message}`;
    return;
  }
  element.dataset.id = id;
  state.sent.set(id, item);
  setTicks(item, 0);
  addItem(chat, item);
  input.value = "";
  input.focus();
}

function received(message) {
  const from = identityOf(message.from);
  if (!from || message.type === CHAT_TYPE) return; // consent chat: shown in the consent view
  const text =
    typeof message.content === "string" && message.type === "text/plain"
      ? message.content
      : `(${message.type} message)`;
  const element = bubble(text, false);
  if (message.id !== undefined) element.dataset.id = message.id;
  addItem(conversation(from), { element, mine: false });
}

function notified(notification) {
  const item = state.sent.get(notification.id);
  if (item === undefined) return;
  if (notification.event === "accepted" || notification.event === "dispatched") {
    setTicks(item, 1);
  } else if (notification.event === "received" || notification.event === "consumed") {
    setTicks(item, 2);
  } else if (notification.event === "failed") {
    item.failed = true;
    item.element.classList.add("failed");
    const mark = item.element.querySelector(".ticks");
    const reason = notification.reason
      ? `${notification.reason.description} (${notification.reason.code})`
      : "failed";
    mark.textContent = "!";
    mark.dataset.ticks = "failed";
    mark.setAttribute("aria-label", `not delivered: ${reason}`);
    mark.title = `Not delivered: ${reason}`;
  }
}

function openPeer(event) {
  event.preventDefault();
  const value = $("peer").value;
  if (value.trim() === "") return;
  $("peer").value = "";
  openConversation(qualified(value));
}

async function main() {
  $("sign-in").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("peer-form").addEventListener("submit", openPeer);
  $("message-form").addEventListener("submit", send);
  $("show-chat").addEventListener("click", () => {
    showView("chat");
    $("peer").focus();
  });
  $("show-consent").addEventListener("click", () => {
    showView("consent");
    $("consent-title").focus();
  });
  window.addEventListener("hashchange", () => {
    const offer = offerInHash();
    if (offer !== null && state.client !== null) {
      showView("consent");
      openOffer(offer);
    }
  });
  setUpConsent();
  try {
    await loadConfig();
  } catch (error) {
    $("sign-in-status").textContent = `The console cannot start: ${error.message}`;
    return;
  }
  $("sign-in-button").disabled = false;
  $("name").focus();
}

main();
