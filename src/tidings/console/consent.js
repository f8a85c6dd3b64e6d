// The consent view of the Tidings web console: the inbox (read, then followed live), the
// relationships with their chat, alerts, permission (scope) requests and revocation, the
// signed-in identity's own invites (create, list, invalidate), and offers opened from a
// capability link.
// Everything goes over the console's LIME session (lime.js), as commands on /consent/...
// Text from the server is always set with textContent, never as markup.

const $ = (id) => document.getElementById(id);
const JSON_TYPE = "application/json";
export const CHAT_TYPE = "application/vnd.tidings.consent-chat+json";
const EVENT_TYPE = "application/vnd.tidings.consent-event+json";
const PAGE = 1000;

const state = {
  client: null,
  me: null,
  cursor: 0, // the last inbox seq handled
  relationships: new Map(), // id -> relationship document
  chats: new Map(), // relationship id -> Map(seq -> {from, text, at})
  alerts: new Map(), // alert id -> {alertId, relationshipId, from, level, title, body, ackRequired, ackId, ackedBy}
  current: null, // relationship id shown
  offer: null, // {url, token, offer}
  invites: [], // the identity's own invite documents, oldest first
  scopeRequests: new Map(), // scope request id -> {id, relationshipId, permissions, message, at, state}
  listeners: [],
};

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

/** Replace a list's entries, keeping the keyboard focus: an inbox event re-renders a list at
 * any moment, and a keyboard user's focused button (Acknowledge, Accept, a relationship) must
 * not vanish under them. The focus follows the same control of the same entry (`data-id`). */
function replaceKeepingFocus(list, items) {
  const active = document.activeElement;
  const focused = active !== null && active !== list && list.contains(active) ? active : null;
  const owner = focused?.closest("[data-id]");
  const key = owner && list.contains(owner) ? owner.dataset.id : null;
  list.replaceChildren(...items);
  if (key === null) return;
  const again = list.querySelector(`[data-id="${CSS.escape(key)}"]`);
  if (again === null) return;
  const twin =
    again.tagName === focused.tagName && again.className === focused.className
      ? again
      : [...again.querySelectorAll(focused.tagName)].find(
          (node) => node.className === focused.className,
        );
  if (twin !== undefined && !twin.disabled) twin.focus();
}

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

/** The text of a {lang: text} map: English, else the first one. */
function localized(texts) {
  if (typeof texts === "string") return texts;
  if (texts === null || typeof texts !== "object") return "";
  return texts.en ?? Object.values(texts)[0] ?? "";
}

function problem(error) {
  return error && error.message ? error.message : String(error);
}

function command(method, uri, resource) {
  const envelope = { method, uri };
  if (resource !== undefined) {
    envelope.type = JSON_TYPE;
    envelope.resource = resource;
  }
  return state.client.sendCommand(envelope);
}

/** Permissions typed as `resource:level` items separated by commas or new lines (the level
 * after the last colon, so `feed:heart-*:read` works); throws an Error saying which item is
 * not one. */
export function parsePermissions(text) {
  const items = String(text)
    .split(/[,\n]/)
    .map((item) => item.trim())
    .filter((item) => item !== "");
  if (items.length === 0) throw new Error("Give at least one permission, as resource:level.");
  return items.map((item) => {
    const at = item.lastIndexOf(":");
    const resource = item.slice(0, at).trim();
    const level = item.slice(at + 1).trim();
    if (at <= 0 || resource === "" || level === "") {
      throw new Error(`"${item}" is not resource:level (e.g. presence:read).`);
    }
    return { resource, level };
  });
}

/** The permissions typed in the field `id`, or null after saying why not in `status` (the
 * focus goes back to the field). */
function permissionsOf(id, status) {
  try {
    return parsePermissions($(id).value);
  } catch (error) {
    status.textContent = problem(error);
    $(id).focus();
    return null;
  }
}

/** Permissions as text: `presence: read, account: read`. */
function permissionsText(permissions) {
  return (permissions ?? []).map((p) => `${p.resource}: ${p.level}`).join(", ") || "none";
}

/** Permissions back in the form the fields take: `presence:read, account:read`. */
function permissionsInput(permissions) {
  return (permissions ?? []).map((p) => `${p.resource}:${p.level}`).join(", ");
}

/** The capability token of a capability URL (its last path segment), or a bare token. */
export function capabilityToken(capability) {
  const value = capability.trim();
  if (!value.includes("/")) return value;
  let path;
  try {
    path = new URL(value).pathname;
  } catch {
    path = value;
  }
  const segments = path.replace(/\/+$/, "").split("/");
  return decodeURIComponent(segments[segments.length - 1] ?? "");
}

// -- start and stop ----------------------------------------------------------------------

/** Start following the signed-in identity's consent (the client is established). */
export async function startConsent(client, me) {
  stopConsent();
  state.client = client;
  state.me = me;
  const onCommand = (envelope) => observed(envelope);
  client.on("command", onCommand);
  state.listeners = [["command", onCommand]];
  $("consent-status").textContent = "";
  try {
    await loadRelationships();
    await loadInvites();
    for (;;) {
      const page = await command("get", `/consent/inbox?since=${state.cursor}&limit=${PAGE}`);
      const items = page.resource?.items ?? [];
      for (const event of items) handle(event);
      if (items.length < PAGE) break;
    }
    await command("subscribe", `/consent/inbox?since=${state.cursor}`);
  } catch (error) {
    if (state.client === client) {
      $("consent-status").textContent = `The consent inbox did not load: ${problem(error)}`;
    }
  }
}

/** Forget everything shown (signed out). */
export function stopConsent() {
  if (state.client !== null) {
    for (const [type, listener] of state.listeners) state.client.off(type, listener);
  }
  state.client = null;
  state.me = null;
  state.cursor = 0;
  state.relationships.clear();
  state.chats.clear();
  state.alerts.clear();
  state.current = null;
  state.listeners = [];
  state.invites = [];
  state.scopeRequests.clear();
  $("invite-list").replaceChildren();
  $("invite-link").hidden = true;
  $("invite-url").value = ""; // the capability link is a secret: not kept past sign-out
  $("invite-status").textContent = "";
  $("scope-requests").replaceChildren();
  $("scope-form").hidden = true;
  delete $("scope-form").dataset.relationship;
  $("relationship-status").textContent = "";
  hideRevoke();
  $("inbox").replaceChildren();
  $("relationship-list").replaceChildren();
  $("relationship").hidden = true;
  $("consent-chat").replaceChildren();
  $("consent-alerts").replaceChildren();
  $("consent-status").textContent = "";
  clearOffer();
}

function observed(envelope) {
  if (envelope.method !== "observe" || envelope.type !== EVENT_TYPE) return;
  if (!String(envelope.uri ?? "").endsWith("/consent/inbox")) return;
  handle(envelope.resource);
}

// -- the inbox ---------------------------------------------------------------------------

const SUMMARY = {
  "invite-created": (d) => `Invite created: ${d.displayName ?? d.inviteId ?? ""}`,
  "invite-accepted": (d) => `Invite accepted by ${d.by ?? d.accepter ?? "someone"}`,
  "invite-refused": (d) => `Invite refused by ${d.by ?? "someone"}`,
  "invite-invalidated": () => "Invite invalidated",
  "relationship-created": (d) => `Relationship created: ${d.appCode ?? d.relationshipId ?? ""}`,
  "relationship-revoked": (d) => `Relationship revoked${d.by ? ` by ${d.by}` : ""}`,
  "relationship-expired": () => "Relationship expired",
  "scope-requested": (d) => `New permissions requested: ${permissionsText(d.permissions)}`,
  "scope-accepted": (d) => `Permission request accepted: ${permissionsText(d.permissions)}`,
  "scope-refused": () => "Permission request refused",
  chat: (d) => `Chat from ${d.from}: ${d.text}`,
  alert: (d) => `Alert (${d.level}) from ${d.from}: ${localized(d.title)}`,
  "alert-acked": (d) => `Alert acknowledged by ${d.by}`,
};

function handle(event) {
  if (!event || typeof event.seq !== "number" || event.seq <= state.cursor) return;
  state.cursor = event.seq;
  const data = event.data ?? {};
  const summary = (SUMMARY[event.kind] ?? (() => event.kind))(data);
  const entry = element("li", null, "event");
  entry.dataset.seq = String(event.seq);
  entry.dataset.kind = event.kind;
  entry.append(element("span", `#${event.seq}`, "seq"), element("span", summary, "summary"));
  entry.append(element("time", when(event.at), "at"));
  const list = $("inbox");
  list.prepend(entry);
  while (list.children.length > 200) list.lastElementChild.remove();

  if (event.kind === "chat") {
    chatOf(data.relationshipId).set(data.seq, { from: data.from, text: data.text, at: event.at });
    if (data.relationshipId === state.current) renderChat();
    else markUnread(data.relationshipId);
  } else if (event.kind === "alert") {
    state.alerts.set(data.alertId, { ...data, at: event.at, ackedBy: null });
    if (data.relationshipId === state.current) renderAlerts();
    else markUnread(data.relationshipId);
  } else if (event.kind === "alert-acked") {
    const alert = state.alerts.get(data.alertId);
    if (alert !== undefined) {
      alert.ackedBy = data.by;
      if (alert.relationshipId === state.current) renderAlerts();
    }
  } else if (event.kind.startsWith("invite-")) {
    loadInvites().catch((error) => {
      $("consent-status").textContent = `Invites did not load: ${problem(error)}`;
    });
  } else if (event.kind.startsWith("relationship-") || event.kind.startsWith("scope-")) {
    if (event.kind === "scope-requested") {
      state.scopeRequests.set(data.scopeRequestId, {
        id: data.scopeRequestId,
        relationshipId: data.relationshipId,
        permissions: data.permissions,
        message: data.message,
        at: event.at,
        state: "pending",
      });
    } else if (event.kind === "scope-accepted" || event.kind === "scope-refused") {
      const request = state.scopeRequests.get(data.scopeRequestId);
      if (request !== undefined) request.state = event.kind.slice("scope-".length);
    }
    loadRelationships().catch((error) => {
      $("consent-status").textContent = `Relationships did not load: ${problem(error)}`;
    });
  }
}

function chatOf(relationshipId) {
  let chat = state.chats.get(relationshipId);
  if (chat === undefined) {
    chat = new Map();
    state.chats.set(relationshipId, chat);
  }
  return chat;
}

// -- relationships -----------------------------------------------------------------------

async function loadRelationships() {
  const client = state.client;
  const answer = await command("get", "/consent/relationships");
  if (state.client !== client) return;
  state.relationships.clear();
  for (const relationship of answer.resource?.items ?? []) {
    state.relationships.set(relationship.id, relationship);
  }
  renderRelationships();
  if (state.current !== null) showRelationship(state.current, false);
}

function counterparty(relationship) {
  const me = (state.me ?? "").toLowerCase();
  return relationship.requester.toLowerCase() === me
    ? relationship.accepter
    : relationship.requester;
}

function renderRelationships() {
  const items = [];
  for (const relationship of state.relationships.values()) {
    const button = element("button", null, "relationship-button");
    button.type = "button";
    button.dataset.id = relationship.id;
    button.append(
      element("span", relationship.appCode, "app"),
      element("span", ` with ${counterparty(relationship)}`, "with"),
      element("span", ` (${relationship.state})`, `state state-${relationship.state}`),
    );
    if (relationship.id === state.current) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => showRelationship(relationship.id, true));
    const entry = element("li");
    entry.append(button);
    items.push(entry);
  }
  if (items.length === 0) items.push(element("li", "No relationships yet.", "empty"));
  replaceKeepingFocus($("relationship-list"), items);
}

function markUnread(relationshipId) {
  const button = document.querySelector(
    `#relationship-list button[data-id="${CSS.escape(relationshipId ?? "")}"]`,
  );
  if (button !== null && button.querySelector(".unread") === null) {
    const badge = element("span", "new", "unread");
    button.append(badge);
  }
}

async function showRelationship(id, focus) {
  const relationship = state.relationships.get(id);
  if (relationship === undefined) return;
  if (state.current !== id) {
    hideRevoke();
    $("relationship-status").textContent = "";
  }
  state.current = id;
  renderRelationships();
  $("relationship").hidden = false;
  $("relationship-title").textContent =
    `${relationship.appCode} with ${counterparty(relationship)}`;
  const facts = $("relationship-facts");
  facts.replaceChildren(
    element("li", `State: ${relationship.state}`),
    element("li", `Since: ${when(relationship.createdAt)}`),
    element("li", `Permissions: ${permissionsText(relationship.permissions)}`),
  );
  if (relationship.revokedBy) {
    const why = relationship.revokeReason ? `: ${relationship.revokeReason}` : "";
    facts.append(element("li", `Revoked by ${relationship.revokedBy}${why}`, "revoked"));
  }
  const active = relationship.state === "active";
  $("relationship-revoke").hidden = !active;
  if (!active) hideRevoke();
  const asking = active && isRequester(relationship);
  const form = $("scope-form");
  if (asking && form.dataset.relationship !== id) {
    $("scope-permissions").value = permissionsInput(relationship.permissions);
    form.dataset.relationship = id;
  }
  form.hidden = !asking;
  renderScopeRequests();
  const chatOn = relationship.features?.chat !== false;
  $("consent-text").disabled = !(active && chatOn);
  $("consent-send").disabled = !(active && chatOn);
  renderChat();
  renderAlerts();
  if (focus) {
    if (!$("consent-text").disabled) $("consent-text").focus();
    else $("relationship-title").focus();
  }
  try {
    const client = state.client;
    const answer = await command("get", `/consent/relationships/${encodeURIComponent(id)}/chat?since=0&limit=${PAGE}`);
    if (state.client !== client) return;
    const chat = chatOf(id);
    for (const message of answer.resource?.items ?? []) {
      chat.set(message.seq, { from: message.sender, text: message.text, at: message.at });
    }
    if (state.current === id) renderChat();
  } catch (error) {
    $("consent-status").textContent = `The chat did not load: ${problem(error)}`;
  }
}

function isRequester(relationship) {
  return relationship.requester.toLowerCase() === (state.me ?? "").toLowerCase();
}

// -- scope requests and revocation -------------------------------------------------------

/** The current relationship's permission requests (known from the inbox), newest first: the
 * accepter can accept or refuse a pending one, the requester sees it wait. */
function renderScopeRequests() {
  const relationship = state.relationships.get(state.current);
  const items = [];
  const requests = [...state.scopeRequests.values()]
    .filter((r) => r.relationshipId === state.current)
    .sort((a, b) => b.at - a.at);
  for (const request of requests) {
    const entry = element("li", null, "scope-request");
    entry.dataset.id = request.id;
    entry.dataset.state = request.state;
    entry.append(
      element("strong", `Asks for: ${permissionsText(request.permissions)}`, "asked"),
      element("span", ` (${request.state})`, `state state-${request.state}`),
    );
    const message = localized(request.message);
    if (message) entry.append(element("p", message, "body"));
    entry.append(element("span", when(request.at), "meta"));
    const pending = request.state === "pending" && relationship?.state === "active";
    if (pending && relationship !== undefined && !isRequester(relationship)) {
      const actions = element("div", null, "actions");
      const accept = element("button", "Accept", "scope-accept");
      accept.type = "button";
      const refuse = element("button", "Refuse", "scope-refuse secondary");
      refuse.type = "button";
      accept.addEventListener("click", () => decideScope(request, "accept", [accept, refuse]));
      refuse.addEventListener("click", () => decideScope(request, "refuse", [accept, refuse]));
      actions.append(accept, refuse);
      entry.append(actions);
    } else if (pending && relationship !== undefined) {
      entry.append(element("span", `Waiting for ${relationship.accepter}`, "meta"));
    }
    items.push(entry);
  }
  replaceKeepingFocus($("scope-requests"), items);
  $("scope-title").hidden = items.length === 0 && $("scope-form").hidden;
}

async function requestScope(event) {
  event.preventDefault();
  const id = state.current;
  const status = $("relationship-status");
  if (state.client === null || id === null) return;
  const permissions = permissionsOf("scope-permissions", status);
  if (permissions === null) return;
  const resource = { requestedPermissions: permissions };
  const message = $("scope-message").value.trim();
  if (message !== "") resource.message = { en: message }; // a {language: text} map
  $("scope-send").disabled = true;
  try {
    const answer = await command("set", `/consent/relationships/${encodeURIComponent(id)}/scope-requests`, resource);
    const request = answer.resource;
    if (!state.scopeRequests.has(request.id)) {
      state.scopeRequests.set(request.id, {
        id: request.id,
        relationshipId: request.relationshipId,
        permissions: request.requestedPermissions,
        message: request.message,
        at: request.createdAt,
        state: request.state,
      });
    }
    $("scope-message").value = "";
    status.textContent = "Permission request sent.";
    renderScopeRequests();
  } catch (error) {
    status.textContent = `Not requested: ${problem(error)}`;
  } finally {
    $("scope-send").disabled = false;
  }
}

async function decideScope(request, decision, buttons) {
  for (const button of buttons) button.disabled = true;
  const status = $("relationship-status");
  try {
    const answer = await command("set", `/consent/scope-requests/${encodeURIComponent(request.id)}`, {
      decision,
    });
    request.state = answer.resource?.state ?? request.state;
    status.textContent = decision === "accept" ? "Permissions changed." : "Request refused.";
    await loadRelationships(); // the new permissions
    $("relationship-title").focus();
  } catch (error) {
    for (const button of buttons) button.disabled = false;
    status.textContent = `Not decided: ${problem(error)}`;
  }
}

function hideRevoke() {
  $("revoke-form").hidden = true;
  $("revoke-reason").value = "";
  $("relationship-revoke").setAttribute("aria-expanded", "false");
}

async function revoke(event) {
  event.preventDefault();
  const id = state.current;
  if (state.client === null || id === null) return;
  const reason = $("revoke-reason").value.trim();
  const status = $("relationship-status");
  $("revoke-confirm").disabled = true;
  try {
    const answer = await command(
      "delete",
      `/consent/relationships/${encodeURIComponent(id)}`,
      reason === "" ? undefined : { reason },
    );
    state.relationships.set(id, answer.resource);
    hideRevoke();
    status.textContent = "Revoked.";
    renderRelationships();
    await showRelationship(id, false);
    $("relationship-title").focus();
  } catch (error) {
    status.textContent = `Not revoked: ${problem(error)}`;
  } finally {
    $("revoke-confirm").disabled = false;
  }
}

// -- the identity's own invites ----------------------------------------------------------

async function loadInvites() {
  const client = state.client;
  const answer = await command("get", `/consent/invites`);
  if (state.client !== client) return;
  state.invites = answer.resource?.items ?? [];
  renderInvites();
}

function renderInvites() {
  const items = [];
  for (const invite of [...state.invites].reverse()) {
    const entry = element("li", null, "invite");
    entry.dataset.id = invite.id;
    entry.dataset.status = invite.status;
    entry.append(
      element("strong", invite.displayName, "name"),
      element("span", ` (${invite.appCode}, ${invite.mode}) `, "app"),
      element("span", invite.status, `status status-${invite.status}`),
      element("span", `Asks for: ${permissionsText(invite.requestedPermissions)}`, "meta"),
      element("span", `Created ${when(invite.createdAt)}, expires ${when(invite.expiresAt)}`, "meta"),
    );
    for (const accepted of invite.acceptedBy ?? []) {
      entry.append(element("span", `Accepted by ${accepted.identity}, ${when(accepted.at)}`, "meta accepted"));
    }
    for (const refused of invite.refusedBy ?? []) {
      const why = refused.reason ? `: ${refused.reason}` : "";
      entry.append(element("span", `Refused by ${refused.identity}${why}`, "meta refused"));
    }
    if (invite.status === "pending") {
      const button = element("button", "Invalidate", "invalidate secondary danger");
      button.type = "button";
      button.setAttribute("aria-label", `Invalidate the invite ${invite.displayName}`);
      button.addEventListener("click", () => invalidate(invite, button));
      const actions = element("div", null, "actions");
      actions.append(button);
      entry.append(actions);
    }
    items.push(entry);
  }
  if (items.length === 0) items.push(element("li", "No invites yet.", "empty"));
  $("invite-list").replaceChildren(...items);
}

async function createInvite(event) {
  event.preventDefault();
  const status = $("invite-status");
  if (state.client === null) return;
  const permissions = permissionsOf("invite-permissions", status);
  if (permissions === null) return;
  const resource = {
    appCode: $("invite-app").value.trim(),
    displayName: $("invite-name").value.trim(),
    consent: { en: $("invite-consent").value.trim() },
    requestedPermissions: permissions,
    mode: $("invite-mode").value,
  };
  $("invite-create").disabled = true;
  try {
    const answer = await command("set", "/consent/invites", resource);
    const invite = answer.resource;
    $("invite-url").value = invite.capabilityUrl;
    $("invite-link").hidden = false;
    $("invite-name").value = "";
    $("invite-consent").value = "";
    status.textContent = `Invite created: ${invite.displayName}. Copy its link now.`;
    $("invite-url").focus();
    $("invite-url").select();
    await loadInvites();
  } catch (error) {
    status.textContent = `Not created: ${problem(error)}`;
  } finally {
    $("invite-create").disabled = false;
  }
}

async function copyInviteLink() {
  const input = $("invite-url");
  const status = $("invite-status");
  input.focus();
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    status.textContent = "Link copied.";
  } catch {
    // no clipboard access (a plain http:// page, or permission refused): the link is selected
    status.textContent = "The link is selected: copy it with Ctrl+C.";
  }
}

async function invalidate(invite, button) {
  button.disabled = true;
  const status = $("invite-status");
  try {
    const answer = await command("set", `/consent/invites/${encodeURIComponent(invite.id)}/invalidate`);
    status.textContent = `Invalidated: ${answer.resource?.displayName ?? invite.displayName}.`;
    await loadInvites();
    $("invites-title").focus();
  } catch (error) {
    button.disabled = false;
    status.textContent = `Not invalidated: ${problem(error)}`;
  }
}

function renderChat() {
  const list = $("consent-chat");
  const chat = state.chats.get(state.current) ?? new Map();
  const me = (state.me ?? "").toLowerCase();
  const items = [...chat.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([seq, message]) => {
      const mine = String(message.from).toLowerCase() === me;
      const entry = element("li", null, mine ? "message mine" : "message theirs");
      entry.dataset.seq = String(seq);
      if (!mine) entry.append(element("span", `${message.from}: `, "from"));
      entry.append(element("span", message.text, "text"));
      return entry;
    });
  list.replaceChildren(...items);
  list.scrollTop = list.scrollHeight;
}

function renderAlerts() {
  const items = [];
  const me = (state.me ?? "").toLowerCase();
  for (const alert of state.alerts.values()) {
    if (alert.relationshipId !== state.current) continue;
    const entry = element("li", null, `alert level-${alert.level}`);
    entry.dataset.id = alert.alertId;
    entry.append(
      element("strong", `${alert.level}: ${localized(alert.title)}`, "title"),
      element("p", localized(alert.body), "body"),
      element("span", `from ${alert.from}, ${when(alert.at)}`, "meta"),
    );
    if (alert.ackedBy) {
      entry.append(element("span", `Acknowledged by ${alert.ackedBy}`, "acked"));
    } else if (alert.ackRequired && String(alert.from).toLowerCase() !== me) {
      const button = element("button", "Acknowledge", "ack");
      button.type = "button";
      button.addEventListener("click", () => acknowledge(alert, button));
      entry.append(button);
    } else if (alert.ackRequired) {
      entry.append(element("span", "Waiting for acknowledgement", "acked"));
    }
    items.push(entry);
  }
  replaceKeepingFocus($("consent-alerts"), items);
  $("alerts-title").hidden = items.length === 0;
}

async function acknowledge(alert, button) {
  button.disabled = true;
  try {
    await command("set", `/consent/alerts/${encodeURIComponent(alert.alertId)}/ack`, {
      ackId: alert.ackId,
    });
    alert.ackedBy = alert.ackedBy ?? state.me; // the alert-acked event confirms it
    renderAlerts();
    $("relationship-title").focus();
  } catch (error) {
    button.disabled = false;
    $("consent-status").textContent = `Not acknowledged: ${problem(error)}`;
  }
}

async function sendChat(event) {
  event.preventDefault();
  const input = $("consent-text");
  const text = input.value;
  const id = state.current;
  if (state.client === null || id === null || text.trim() === "") return;
  input.disabled = true;
  try {
    const answer = await command("set", `/consent/relationships/${encodeURIComponent(id)}/chat`, {
      text,
    });
    const message = answer.resource;
    if (message && typeof message.seq === "number") {
      chatOf(id).set(message.seq, { from: message.sender, text: message.text, at: message.at });
      if (state.current === id) renderChat();
    }
    input.value = "";
    $("consent-status").textContent = "";
  } catch (error) {
    $("consent-status").textContent = `Not sent: ${problem(error)}`;
  } finally {
    input.disabled = false;
    input.focus();
  }
}

// -- offers ------------------------------------------------------------------------------

function clearOffer() {
  state.offer = null;
  $("offer").hidden = true;
  $("offer-details").replaceChildren();
  $("offer-status").textContent = "";
}

/** Read the offer of a capability link and show it with Accept and Refuse. */
export async function openOffer(url) {
  clearOffer();
  $("offer-url").value = url;
  const token = capabilityToken(url);
  const status = $("offer-status");
  if (state.client === null || token === "") {
    status.textContent = "Paste a capability link first.";
    return;
  }
  status.textContent = "Reading the offer…";
  let offer;
  try {
    const answer = await command("get", `/consent/offers/${encodeURIComponent(token)}`);
    offer = answer.resource;
  } catch (error) {
    status.textContent = `This offer cannot be read: ${problem(error)}`;
    return;
  }
  state.offer = { url: url.trim(), token, offer };
  const details = $("offer-details");
  const permissions = element("ul", null, "permissions");
  for (const permission of offer.requestedPermissions ?? []) {
    permissions.append(element("li", `${permission.resource}: ${permission.level}`));
  }
  details.replaceChildren(
    element("dt", "From"),
    element("dd", offer.requester),
    element("dt", "Application"),
    element("dd", `${offer.displayName} (${offer.appCode})`),
    element("dt", "Consent"),
    element("dd", localized(offer.consent)),
    element("dt", "Asks for"),
    (() => {
      const dd = element("dd");
      dd.append(permissions);
      return dd;
    })(),
    element("dt", "Expires"),
    element("dd", when(offer.expiresAt)),
  );
  $("offer-title").textContent = offer.displayName;
  $("offer").hidden = false;
  status.textContent = "";
  $("offer-title").focus();
}

async function decide(decision) {
  const offer = state.offer;
  if (offer === null || state.client === null) return;
  const status = $("offer-status");
  $("offer-accept").disabled = true;
  $("offer-refuse").disabled = true;
  const resource = { decision };
  if (offer.url.includes("://")) resource.capabilityUrl = offer.url;
  try {
    const answer = await command("set", `/consent/offers/${encodeURIComponent(offer.token)}`, resource);
    if (decision === "accept") {
      const relationship = answer.resource;
      state.relationships.set(relationship.id, relationship);
      clearOffer();
      $("offer-url").value = "";
      $("offer-status").textContent = `Accepted: ${relationship.appCode} with ${counterparty(relationship)}.`;
      await showRelationship(relationship.id, true);
    } else {
      clearOffer();
      $("offer-url").value = "";
      $("offer-status").textContent = "Refused.";
      $("offer-url").focus();
    }
  } catch (error) {
    status.textContent = `Not done: ${problem(error)}`;
  } finally {
    $("offer-accept").disabled = false;
    $("offer-refuse").disabled = false;
  }
}

/** Wire the view's forms (once, at page load). */
export function setUpConsent() {
  $("offer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    openOffer($("offer-url").value);
  });
  $("offer-accept").addEventListener("click", () => decide("accept"));
  $("offer-refuse").addEventListener("click", () => decide("refuse"));
  $("consent-chat-form").addEventListener("submit", sendChat);
  $("invite-form").addEventListener("submit", createInvite);
  $("invite-copy").addEventListener("click", copyInviteLink);
  $("scope-form").addEventListener("submit", requestScope);
  $("revoke-form").addEventListener("submit", revoke);
  $("relationship-revoke").addEventListener("click", () => {
    $("revoke-form").hidden = false;
    $("relationship-revoke").setAttribute("aria-expanded", "true");
    $("revoke-reason").focus();
  });
  $("revoke-cancel").addEventListener("click", () => {
    hideRevoke();
    $("relationship-revoke").focus();
  });
}
