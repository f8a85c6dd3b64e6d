// The Tidings admin dashboard: the admin HTTP routes and /metrics, refreshed every 2 s.
// The admin token lives in sessionStorage (this tab only) and goes in the Authorization header.

const $ = (id) => document.getElementById(id);
const KEY = "tidings.adminToken";
const REFRESH_MS = 2000;
const WINDOW_S = 300; // the chart shows the last 5 minutes
const ROUTED = /^tidings_messages_routed_total(?:\{\})? (\S+)$/m;

const state = {
  token: null,
  timer: null,
  generation: 0, // bumped on sign-out: a refresh in flight then drops its answers
  last: null, // {at (s), routed} of the previous /metrics reading
  rates: [], // [{at (s), rate}]
};

class Refused extends Error {}

function readToken() {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

function keepToken(token) {
  try {
    if (token) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
  } catch {
    // storage off: the token lives in memory only
  }
}

async function admin(path) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${state.token}` },
    cache: "no-store",
  });
  if (response.status === 401 || response.status === 403 || response.status === 429) {
    let why = `HTTP ${response.status}`;
    try {
      const problem = await response.json();
      why = `${problem.detail || problem.title} (${problem.error_id || response.status})`;
    } catch {
      // not problem JSON: the status says enough
    }
    throw new Refused(why);
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function routedTotal() {
  const response = await fetch("/metrics", { cache: "no-store" });
  if (!response.ok) throw new Error(`/metrics: HTTP ${response.status}`);
  const found = ROUTED.exec(await response.text());
  return found ? Number(found[1]) : 0;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text ?? "—";
  row.append(td);
}

function fill(table, items, columns, empty) {
  const body = $(table).tBodies[0];
  const rows = items.map((item) => {
    const row = document.createElement("tr");
    for (const column of columns) cell(row, column(item));
    return row;
  });
  if (rows.length === 0) {
    const row = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = columns.length;
    td.className = "empty";
    td.textContent = empty;
    row.append(td);
    rows.push(row);
  }
  body.replaceChildren(...rows);
}

const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString();

function drawChart() {
  const svg = $("rate-chart");
  const ns = "http://www.w3.org/2000/svg";
  const now = Date.now() / 1000;
  const points = state.rates.filter((p) => p.at >= now - WINDOW_S);
  const top = Math.max(1, ...points.map((p) => p.rate));
  const shapes = [];
  for (const fraction of [0.5, 1]) {
    const grid = document.createElementNS(ns, "line");
    const y = String(100 - fraction * 95);
    grid.setAttribute("x1", "0");
    grid.setAttribute("x2", "300");
    grid.setAttribute("y1", y);
    grid.setAttribute("y2", y);
    grid.setAttribute("class", "grid");
    shapes.push(grid);
  }
  if (points.length > 0) {
    const xy = (p) =>
      `${(300 - ((now - p.at) / WINDOW_S) * 300).toFixed(1)},${(100 - (p.rate / top) * 95).toFixed(1)}`;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map(xy).join(" "));
    line.setAttribute("class", "rate");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    shapes.push(line);
  }
  svg.replaceChildren(...shapes);
  svg.dataset.points = String(points.length);
  const latest = points.at(-1);
  $("rate-summary").textContent = latest
    ? `Now ${latest.rate.toFixed(1)}/s, peak ${top.toFixed(1)}/s over ${points.length} readings` +
      ` (scale 0–${top.toFixed(1)}).`
    : "Waiting for two readings…";
}

async function refresh() {
  const generation = state.generation;
  // the connections first: a refused token then costs one request (one 401 in the log)
  const connections = await admin("/admin/connections");
  const [queues, federation, routed] = await Promise.all([
    admin("/admin/queues?top=10"),
    admin("/admin/federation"),
    routedTotal(),
  ]);
  if (generation !== state.generation) return;
  const at = Date.now() / 1000;
  if (state.last && at > state.last.at) {
    const rate = Math.max(0, routed - state.last.routed) / (at - state.last.at);
    state.rates.push({ at, rate });
    state.rates = state.rates.filter((p) => p.at >= at - WINDOW_S);
    $("rate-now").textContent = rate.toFixed(1);
  }
  state.last = { at, routed };
  drawChart();

  $("connection-count").textContent = String(connections.length);
  fill(
    "connections",
    connections,
    [(c) => c.protocol, (c) => c.identity, (c) => c.instance, (c) => clock(c.since), (c) => c.remote],
    "No open connections",
  );
  $("queued-total").textContent = String(queues.reduce((sum, q) => sum + q.depth, 0));
  fill(
    "queues",
    queues,
    [
      (q) => q.identity,
      (q) => q.instance || "(unclaimed)",
      (q) => String(q.depth),
      (q) => `${q.limit} (${q.policy})`,
      (q) => (q.online ? "yes" : "no"),
    ],
    "No queued messages",
  );
  const peers = federation.peers || [];
  $("peer-count").textContent = String(peers.length);
  fill(
    "peers",
    peers,
    [
      (p) => p.domain,
      (p) => String(p.outbox),
      (p) => (p.oldestWaitingS == null ? null : `${p.oldestWaitingS} s`),
      (p) => String(p.sent),
      (p) => String(p.failures),
      (p) => p.lastError,
    ],
    "No federation peers",
  );
  $("updated").textContent = `Updated ${clock(at)}`;
}

function schedule() {
  const generation = state.generation;
  state.timer = setTimeout(async () => {
    if (generation !== state.generation) return;
    try {
      await refresh();
      $("updated").classList.remove("stale");
    } catch (error) {
      if (error instanceof Refused) {
        signOut(`Refused: ${error.message}`);
        return;
      }
      $("updated").textContent = `Could not refresh: ${error.message}`;
      $("updated").classList.add("stale");
    }
    if (generation === state.generation) schedule();
  }, REFRESH_MS);
}

async function open(token, focus) {
  state.token = token;
  state.generation += 1;
  state.last = null;
  state.rates = [];
  const status = $("token-status");
  const button = $("token-button");
  status.textContent = "";
  button.disabled = true;
  try {
    await refresh();
  } catch (error) {
    keepToken(null);
    state.token = null;
    status.textContent =
      error instanceof Refused ? `Refused: ${error.message}` : `Could not load: ${error.message}`;
    button.disabled = false;
    $("token").focus();
    return;
  }
  button.disabled = false;
  keepToken(token);
  $("token").value = "";
  $("token-view").hidden = true;
  $("dashboard").hidden = false;
  $("forget").hidden = false;
  if (focus) $("dashboard-title").focus();
  schedule();
}

function signOut(why = "") {
  state.generation += 1;
  clearTimeout(state.timer);
  state.token = null;
  keepToken(null);
  $("dashboard").hidden = true;
  $("forget").hidden = true;
  $("token-view").hidden = false;
  $("token-status").textContent = why;
  $("token").focus();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (token) open(token, true);
});
$("forget").addEventListener("click", () => signOut());

const kept = readToken();
if (kept) open(kept, false);
else $("token").focus();
