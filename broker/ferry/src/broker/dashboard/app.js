// The dashboard: clusters, placement, recommendations, migrations and cost over time,
// kept current by the broker's event stream. Rows are updated in place, keyed by id, so
// that nothing jumps and keyboard focus stays put when events arrive.

import { api, claimsOf, follow, HttpError, mayOperate, Unreachable } from "./live.js";
import * as chart from "./chart.js";

const TOKEN_KEY = "ferry.token";
const FINAL = new Set(["done", "rolledBack", "failed", "cancelled"]);
/** Events come in bursts: one re-read per burst. */
const DEBOUNCE_MS = 150;
const RETRY_MS = 5_000;
const MAX_PAST_MIGRATIONS = 50;
const MAX_POINTS = 2_000;
const HOURS_PER_MONTH = 730;

const PROVIDERS = { openstack: "OpenStack", gke: "GKE", kubernetes: "Kubernetes", sim: "Simulated" };
/** `rollingBack` → `rolling back`. */
const words = (state) => String(state).replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`);

const $ = (id) => document.getElementById(id);

// --- formatting

const formats = new Map();
function format(key, make) {
  if (!formats.has(key)) formats.set(key, make());
  return formats.get(key);
}
function currency() {
  return data.clusters.find((c) => c.pricing?.currency)?.pricing.currency ?? "USD";
}
function money(value, code = currency()) {
  if (typeof value !== "number") return "–";
  return format(`m${code}`, () => new Intl.NumberFormat(undefined, { style: "currency", currency: code })).format(value);
}
function shortMoney(value) {
  const code = currency();
  return format(`s${code}`, () => new Intl.NumberFormat(undefined, {
    style: "currency", currency: code, notation: "compact", maximumFractionDigits: 1,
  })).format(value);
}
function number(value, digits = 1) {
  return value.toLocaleString(undefined, { maximumFractionDigits: digits });
}
function cores(millis) {
  return number(millis / 1000, 2);
}
function memory(bytes) {
  const gib = bytes / 2 ** 30;
  if (gib >= 1024) return `${number(gib / 1024)} TiB`;
  if (gib < 1) return `${number(bytes / 2 ** 20, 0)} MiB`;
  return `${number(gib)} GiB`;
}
function seconds(at) {
  const t = Date.parse(at ?? "");
  return Number.isFinite(t) ? t : null;
}
function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 1) return "< 1 s";
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
const clock = (date, second = "2-digit") => date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second });

// --- DOM helpers

function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "testid") node.dataset.testid = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}
function setData(node, key, value) {
  if (node.dataset[key] !== value) node.dataset[key] = value;
}
function show(node, visible) {
  if (node.hidden === visible) node.hidden = !visible;
}

/** Makes the keyed children of `container` (after `after`) match `items` in order: a key
 * keeps its element, `create(item)` builds one, `update(node, item)` refreshes it. */
function reconcile(container, items, key, create, update, after = null) {
  const wanted = new Map(items.map((item) => [key(item), item]));
  const existing = new Map();
  for (const child of [...container.children]) {
    if (child.dataset.key === undefined) continue;
    if (wanted.has(child.dataset.key)) existing.set(child.dataset.key, child);
    else child.remove();
  }
  let previous = after;
  for (const [k, item] of wanted) {
    let node = existing.get(k);
    if (!node) {
      node = create(item);
      node.dataset.key = k;
    }
    update(node, item);
    const expected = previous ? previous.nextElementSibling : container.firstElementChild;
    if (expected !== node) container.insertBefore(node, expected);
    previous = node;
  }
}

// --- state

/** What the page knows, each part replaced as an answer arrives; `progress` holds a
 * running start step's rollout per migration id (`migration.progress`). */
const data = { clusters: [], workloads: [], placements: null, controllers: null, migrations: [], history: [], progress: new Map() };
/** The signed-in session: {token, claims, operate, controller, expiry}. */
let session = null;
let loadedAt = null;

// --- banner and status

let bannerKind = null;
function banner(kind, message) {
  bannerKind = kind;
  setText($("error-banner"), message);
  show($("error-banner"), true);
}
function clearBanner(...kinds) {
  if (kinds.length > 0 && !kinds.includes(bannerKind)) return;
  bannerKind = null;
  show($("error-banner"), false);
  setText($("error-banner"), "");
}

function setConnection(state, retryMs) {
  const status = $("connection");
  setText(status, state.replace("-", " "));
  setData(status, "state", state);
  if (state === "live") {
    clearBanner("offline");
  } else if (state === "offline" && session) {
    const since = loadedAt ? ` What you see is from ${clock(loadedAt)}.` : "";
    banner("offline", `The broker cannot be reached: retrying in ${Math.ceil(retryMs / 1000)} s.${since}`);
  }
}

// --- loading

const PATHS = {
  clusters: "clusters", workloads: "workloads", placements: "placements",
  migrations: "migrations", history: `cost-history?limit=${MAX_POINTS}`,
  controllers: "controllers",
};
const ALL = Object.keys(PATHS);
const get = async (s, part) => {
  const body = await api(s.token, "GET", `/api/v1/${PATHS[part]}`);
  return part === "placements" || part === "controllers" ? body : body.items;
};
const RENDERERS = {
  clusters: [renderClusters, renderFilters, renderPlacement, renderPlanSummary, renderCost],
  workloads: [renderFilters, renderPlacement],
  placements: [renderRecommendations, renderPlanSummary],
  // The chart's marks carry the migrations' own savings.
  migrations: [renderMigrations, renderRecommendations, renderPlanSummary, renderCost],
  history: [renderCost],
  controllers: [renderPlanSummary],
};

const wanted = new Set();
let debounce = 0;
let retry = 0;
let chain = Promise.resolve();

/** Re-reads the named parts soon, once per burst. */
function refresh(...parts) {
  parts.forEach((p) => wanted.add(p));
  if (debounce) return;
  debounce = setTimeout(() => {
    debounce = 0;
    const parts = [...wanted];
    wanted.clear();
    // One read at a time: an older answer never overwrites a newer one.
    chain = chain.then(() => load(parts)).catch((error) => {
      console.error(error);
      banner("load", `The page failed: ${error.message}`);
    });
  }, DEBOUNCE_MS);
}

async function load(parts) {
  const s = session;
  if (!s) return;
  const results = await Promise.allSettled(parts.map((p) => get(s, p)));
  if (s !== session) return;
  const renderers = new Set();
  const failed = [];
  let failure = null;
  results.forEach((result, i) => {
    if (result.status === "fulfilled") {
      data[parts[i]] = result.value;
      RENDERERS[parts[i]].forEach((r) => renderers.add(r));
    } else {
      failed.push(parts[i]);
      failure ??= result.reason;
    }
  });
  if (renderers.size > 0) {
    loadedAt = new Date();
    show($("dashboard"), true);
  }
  renderers.forEach((render) => render());
  if (!failure) {
    clearBanner("load");
    return;
  }
  if (failure instanceof HttpError && failure.status === 401) {
    signOut(rejection(failure));
    return;
  }
  banner("load", failure instanceof Unreachable
    ? `The broker cannot be reached (${failure.message}): retrying.`
    : `The broker answered: ${failure.message}. Retrying.`);
  clearTimeout(retry);
  retry = setTimeout(() => refresh(...failed), RETRY_MS);
}

function rejection(error) {
  if (error.code === "token_expired") return "Your token has expired: sign in with a new one.";
  return `The broker refused this token (${error.message}): sign in with another one.`;
}

// --- events

function onEvent({ kind, data: d }) {
  switch (kind) {
    case "migration.progress":
      data.progress.set(d.id, `${d.available} of ${d.desired} replicas available`);
      renderMigrations();
      return;
    case "migration.step":
      // A step moves replicas: usage and placement change.
      refresh("migrations", "clusters", "workloads");
      return;
    case "migration.state":
      refresh("migrations");
      if (FINAL.has(d.state)) {
        data.progress.delete(d.id);
        refresh("clusters", "workloads", "placements");
      }
      return;
    case "migration.cancelRequested":
      refresh("migrations");
      return;
    case "migration.sourceRemoved":
      refresh("migrations", "clusters", "workloads");
      return;
    case "cost.sampled": {
      const last = data.history[data.history.length - 1];
      addPoint(d);
      renderCost();
      // Run-rates that moved mean something changed on the clusters.
      if (last && last.total !== d.total) refresh("clusters", "workloads", "placements");
      return;
    }
    case "policies.changed":
    case "controller.decision":
    case "controller.mode":
      refresh("placements", "controllers");
      return;
    default:
      // resources.reloaded, cluster.health, lagged, and kinds unknown here.
      refresh(...ALL);
  }
}

function addPoint(point) {
  const same = (p) => p.at === point.at && p.total === point.total && p.migration === point.migration
    && p.pricing === point.pricing;
  if (data.history.slice(-5).some(same)) return;
  data.history.push(point);
  if (data.history.length > MAX_POINTS) data.history.splice(0, data.history.length - MAX_POINTS);
}

// --- clusters

function meter(label) {
  const fill = h("div", { class: "fill" });
  const value = h("span", { class: "value" });
  const node = h("div", { class: "meter" },
    h("div", { class: "meter-label" }, h("span", { text: label }), value),
    h("div", { class: "bar", "aria-hidden": "true" }, fill));
  node.refs = { fill, value };
  return node;
}
function setMeter(node, used = 0, capacity = 0, unit) {
  const share = capacity > 0 ? Math.min(used / capacity, 1) : 0;
  node.refs.fill.style.width = `${(share * 100).toFixed(1)}%`;
  node.refs.fill.classList.toggle("high", share >= 0.85);
  setText(node.refs.value, capacity > 0
    ? `${unit(used)} of ${unit(capacity)} · ${unit(Math.max(capacity - used, 0))} free` : "unknown");
}

function createCluster(c) {
  const refs = {
    badge: h("span", { class: "badge" }),
    region: h("span"),
    health: h("span", { class: "health" }),
    cpu: meter("CPU cores"),
    memory: meter("Memory"),
    workloads: h("dd"),
    cost: h("dd", { class: "cost" }),
    error: h("p", { class: "error-text", hidden: true }),
  };
  const node = h("article", { class: "card cluster", testid: "cluster-card" },
    h("header", {}, h("h3", { text: c.name }), refs.badge),
    h("p", { class: "meta" }, refs.region, " · ", refs.health),
    refs.cpu, refs.memory,
    h("dl", { class: "facts" },
      h("div", {}, h("dt", { text: "Workloads" }), refs.workloads),
      h("div", {}, h("dt", { text: "Monthly cost" }), refs.cost)),
    refs.error);
  node.refs = refs;
  return node;
}

function updateCluster(node, c) {
  const r = node.refs;
  setData(node, "cluster", c.name);
  setData(node, "provider", c.provider);
  setText(r.badge, PROVIDERS[c.provider] ?? c.provider);
  r.badge.className = `badge provider-${c.provider}`;
  const region = c.labels?.region ?? c.labels?.["topology.kubernetes.io/region"];
  setText(r.region, region ? `Region ${region}` : "No region label");
  setText(r.health, c.health);
  r.health.className = `health health-${String(c.health).toLowerCase()}`;
  setMeter(r.cpu, c.used?.cpuMillis, c.capacity?.cpuMillis, cores);
  setMeter(r.memory, c.used?.memoryBytes, c.capacity?.memoryBytes, memory);
  setText(r.workloads, String(c.workloads));
  setText(r.cost, money(c.monthlyCost, c.pricing?.currency));
  setText(r.error, c.error ?? "");
  show(r.error, Boolean(c.error));
}

function renderClusters() {
  reconcile($("clusters"), data.clusters, (c) => c.name, createCluster, updateCluster);
  const empty = $("clusters-empty");
  setText(empty, "No member clusters.");
  show(empty, data.clusters.length === 0);
}

// --- placement

function copies() {
  const rows = [];
  for (const w of data.workloads) {
    for (const p of w.placements ?? []) {
      rows.push({ workload: `${w.namespace}/${w.name}`, w, p });
    }
  }
  rows.sort((a, b) => a.workload.localeCompare(b.workload) || a.p.cluster.localeCompare(b.p.cluster));
  return rows;
}

/** A copy's monthly cost: the workload's if it has one copy, else at its cluster's prices. */
function copyCost({ w, p }) {
  if ((w.placements ?? []).length === 1) return w.monthlyCost;
  const c = data.clusters.find((c) => c.name === p.cluster);
  if (!c?.pricing) return null;
  const hourly = (w.resources.cpuMillis / 1000) * c.pricing.cpuCoreHour
    + (w.resources.memoryBytes / 2 ** 30) * c.pricing.memoryGibHour;
  return hourly * HOURS_PER_MONTH * p.replicas;
}

function labelsText(labels) {
  return Object.entries(labels ?? {}).map(([k, v]) => `${k}=${v}`).join(" · ");
}

function createRow() {
  const refs = {
    name: h("span", { class: "name" }),
    labels: h("span", { class: "labels" }),
    cluster: h("td", { class: "cluster" }),
    replicas: h("td", { class: "num" }),
    cpu: h("td", { class: "num" }),
    memory: h("td", { class: "num" }),
    cost: h("td", { class: "num" }),
  };
  const node = h("tr", { testid: "placement-row" },
    h("th", { scope: "row" }, refs.name, refs.labels),
    refs.cluster, refs.replicas, refs.cpu, refs.memory, refs.cost);
  node.refs = refs;
  return node;
}

function updateRow(node, row) {
  const r = node.refs;
  setData(node, "workload", row.workload);
  setData(node, "cluster", row.p.cluster);
  setData(node, "namespace", row.w.namespace);
  setText(r.name, row.w.name);
  setText(r.labels, labelsText(row.w.labels));
  setText(r.cluster, row.p.cluster);
  const available = row.p.availableReplicas;
  setText(r.replicas, available !== undefined && available !== row.p.replicas
    ? `${row.p.replicas} (${available} ready)` : String(row.p.replicas));
  setText(r.cpu, row.w.resources?.cpu ?? "–");
  setText(r.memory, memory(row.w.resources?.memoryBytes ?? 0));
  setText(r.cost, money(copyCost(row)));
  node.labels = row.w.labels ?? {};
}

function createGroup(ns) {
  const title = h("span", { class: "ns", text: ns });
  const summary = h("span", { class: "muted" });
  const header = h("tr", { class: "group" }, h("th", { colspan: "6", scope: "rowgroup" }, title, summary));
  const body = h("tbody", {}, header);
  body.refs = { header, summary };
  return body;
}

function renderPlacement() {
  const table = document.querySelector("table.placement");
  const groups = new Map();
  for (const row of copies()) {
    if (!groups.has(row.w.namespace)) groups.set(row.w.namespace, []);
    groups.get(row.w.namespace).push(row);
  }
  const list = [...groups.entries()].sort(([a], [b]) => a.localeCompare(b));
  reconcile(table, list, ([ns]) => ns, ([ns]) => createGroup(ns), (body, [ns, rows]) => {
    const workloads = data.workloads.filter((w) => w.namespace === ns);
    const cost = workloads.reduce((sum, w) => sum + (w.monthlyCost ?? 0), 0);
    setText(body.refs.summary, ` · ${workloads.length} workload${workloads.length === 1 ? "" : "s"} · ${money(cost)} a month`);
    reconcile(body, rows, (r) => `${r.workload}@${r.p.cluster}`, createRow, updateRow, body.refs.header);
  }, table.tHead);
  applyFilters();
}

function setOptions(select, values) {
  const current = select.value;
  // A chosen value that vanished (a cluster removed) stays chosen and selectable.
  const all = current && !values.includes(current) ? [...values, current] : values;
  const options = [["", "All"], ...all.map((v) => [v, v])];
  reconcile(select, options, ([v]) => `o:${v}`, ([v, text]) => h("option", { value: v, text }), () => {});
  select.value = current;
}

function renderFilters() {
  const namespaces = [...new Set(data.workloads.map((w) => w.namespace))].sort();
  setOptions($("filter-namespace"), namespaces);
  setOptions($("filter-cluster"), data.clusters.map((c) => c.name));
}

/** `key=value`, `key` (has the label), or several of them separated by commas or spaces. */
function labelMatcher(text) {
  const terms = text.split(/[\s,]+/).filter(Boolean).map((term) => term.split("="));
  return (labels) => terms.every(([k, v]) => k in labels && (!v || labels[k] === v));
}

function applyFilters() {
  const ns = $("filter-namespace").value;
  const cluster = $("filter-cluster").value;
  const matches = labelMatcher($("filter-label").value);
  let shown = 0;
  let total = 0;
  for (const body of document.querySelectorAll("table.placement tbody")) {
    let visible = 0;
    for (const row of body.querySelectorAll("tr[data-key]")) {
      const ok = (!ns || row.dataset.namespace === ns)
        && (!cluster || row.dataset.cluster === cluster)
        && matches(row.labels ?? {});
      show(row, ok);
      total += 1;
      if (ok) visible += 1;
    }
    show(body, visible > 0);
    shown += visible;
  }
  const filtered = ns || cluster || $("filter-label").value.trim();
  setText($("placement-count"), filtered ? `${shown} of ${total} shown` : `${total} running`);
  const empty = $("placement-empty");
  setText(empty, total === 0 ? "No workloads run on the members." : "No workload matches these filters.");
  show(empty, shown === 0);
}

// --- recommendations

function running(workload) {
  return data.migrations.find((m) => m.workload === workload && !FINAL.has(m.state));
}

function createRecommendation(move) {
  const refs = {
    saving: h("span", { class: "saving" }),
    cost: h("span", { class: "muted" }),
    decision: h("p", { class: "decision", testid: "decision" }),
    reasons: h("ul", { class: "reasons" }),
    actions: h("div", { class: "actions" }),
    status: h("p", { class: "action-status", role: "status" }),
    button: null,
  };
  const node = h("li", { class: "rec", testid: "recommendation" },
    h("div", { class: "rec-head" },
      h("strong", { text: move.workload }),
      h("span", { class: "route", text: `${move.from} → ${move.to}` })),
    h("p", {}, refs.saving, " ", refs.cost),
    refs.decision,
    refs.reasons,
    refs.actions);
  node.refs = refs;
  if (session?.operate) {
    refs.button = h("button", {
      type: "button",
      testid: "start-migration",
      "aria-label": `Start migration of ${move.workload} to ${move.to}`,
      onclick: () => startMigration(node.move, node),
    });
    refs.actions.append(refs.button);
  }
  refs.actions.append(refs.status);
  return node;
}

function updateRecommendation(node, move) {
  const r = node.refs;
  node.move = move;
  setData(node, "workload", move.workload);
  setData(node, "from", move.from);
  setData(node, "to", move.to);
  const phrase = chart.savingPhrase(move.monthlySavings, money);
  setText(r.saving, phrase ? `${phrase[0].toUpperCase()}${phrase.slice(1)}` : "");
  setText(r.cost, move.migrationCost ? `(moving costs ${money(move.migrationCost)} once)` : "");
  setText(r.decision, decisionText(move.decision));
  setData(node, "verdict", move.decision?.verdict ?? "");
  const placement = data.placements?.plan?.placements?.find((p) => p.workload === move.workload && p.cluster === move.to);
  const reasons = placement?.reasons ?? [];
  reconcile(r.reasons, reasons.map((text, i) => ({ text, i })), (x) => String(x.i),
    () => h("li"), (li, x) => setText(li, x.text));
  if (r.button && !node.acting) {
    const busy = running(move.workload);
    r.button.disabled = Boolean(busy);
    setText(r.button, busy ? "Migration running" : node.acceptEmptyVolumes ? EMPTY_VOLUMES_LABEL : "Start migration");
  }
}

/** An operator's action from a button of `node`: `request(token)` runs, `ok(result)` says
 * how it went in the node's status line; a refusal is said there too, a 401 signs out. */
async function act(node, button, busy, request, ok) {
  const s = session;
  const label = button.textContent;
  node.acting = true;
  button.disabled = true;
  setText(button, busy);
  setText(node.refs.status, "");
  try {
    const result = await request(s.token);
    if (s === session) setText(node.refs.status, ok(result));
  } catch (error) {
    if (s !== session) return;
    if (error instanceof HttpError && error.status === 401) return signOut(rejection(error));
    setText(node.refs.status, `Refused: ${error.message}`);
    button.disabled = false;
    setText(button, label);
    // Claims that would stay behind: the operator may accept that, explicitly, with the
    // next click (the broker refuses until the request says so).
    if (error instanceof HttpError && error.code === "uses_claims") {
      node.acceptEmptyVolumes = true;
      setText(button, EMPTY_VOLUMES_LABEL);
    }
  } finally {
    node.acting = false;
    if (s === session) renderRecommendations();
  }
}

const EMPTY_VOLUMES_LABEL = "Move with empty volumes";

function startMigration(move, node) {
  const body = { workload: move.workload, to: move.to };
  if (node.acceptEmptyVolumes) body.acceptEmptyVolumes = true;
  act(node, node.refs.button, "Starting…",
    (token) => api(token, "POST", "/api/v1/migrations", body),
    (migration) => {
      data.migrations = [migration, ...data.migrations.filter((m) => m.id !== migration.id)];
      renderMigrations();
      return `Started ${migration.id}.`;
    });
}

/** What the controllers do with a recommended move, and when. */
function decisionText(decision) {
  if (!decision) return "The controllers have not looked at this move yet.";
  const when = decision.notBefore ? ` until ${decision.notBefore.replace("T", " ").replace("Z", " UTC")}` : "";
  switch (decision.verdict) {
    case "start":
      return decision.migration ? `Started by the ${decision.kind} controller as ${decision.migration}.` : `The ${decision.kind} controller starts it now.`;
    case "hold":
      return `The controller waits${when}: ${decision.reason}.`;
    default:
      return `Not started automatically: ${decision.reason}.`;
  }
}

function renderRecommendations() {
  const plan = data.placements?.plan;
  const moves = plan?.moves ?? [];
  reconcile($("recommendations"), moves, (m) => `${m.workload}>${m.to}`, createRecommendation, updateRecommendation);
  show($("recs-empty"), Boolean(plan) && moves.length === 0);
  const unplaced = plan?.unplaced ?? [];
  const details = $("unplaced");
  show(details, unplaced.length > 0);
  setText(details.querySelector("summary"),
    `${unplaced.length} workload${unplaced.length === 1 ? "" : "s"} cannot be placed anywhere`);
  reconcile(details.querySelector("ul"), unplaced, (u) => u.workload, () => h("li"), (li, u) => {
    const why = Object.entries(u.reasons ?? {}).map(([c, reason]) => `${c}: ${reason}`).join("; ");
    setText(li, `${u.workload}: ${why}`);
  });
}

function renderPlanSummary() {
  const plan = data.placements?.plan;
  if (!plan || data.clusters.length === 0) return;
  const now = data.clusters.reduce((sum, c) => sum + (c.monthlyCost ?? 0), 0);
  const saving = (plan.moves ?? []).reduce((sum, m) => sum + (m.monthlySavings ?? 0), 0);
  const moves = plan.moves?.length ?? 0;
  // What the moves done so far were for, and what they save (evacuations may cost).
  const done = data.migrations.filter((m) => m.state === "done" && !m.dryRun);
  const byReason = new Map();
  for (const m of done) byReason.set(m.trigger ?? "manual", (byReason.get(m.trigger ?? "manual") ?? 0) + 1);
  const realised = chart.realisedSavings(data.migrations);
  const history = done.length === 0 ? ""
    : ` Moves done: ${[...byReason].map(([r, n]) => `${n} ${r}`).join(", ")}; ${done.length === 1 ? "it" : "they"} ${chart.savingPhrase(realised.monthly, money, { plural: done.length !== 1 })}.`;
  const mode = data.controllers?.mode;
  const controllers = mode === "auto" ? " Controllers: auto (they start what the policies allow)."
    : mode === "recommend" ? " Controllers: recommend (they start nothing)." : "";
  setText($("plan-summary"), (moves === 0
    ? `Running costs ${money(now)} a month.`
    : `Running costs ${money(now)} a month; ${moves} move${moves === 1 ? "" : "s"} would save ${money(saving)} of it.`) + controllers + history);
}

// --- migrations

function stepTime(step) {
  const start = seconds(step.startedAt);
  if (start === null) return { text: "", since: null };
  const end = seconds(step.endedAt);
  if (end === null) return { text: duration(Date.now() - start), since: start };
  return { text: duration(end - start), since: null };
}

function createStep() {
  const refs = {
    state: h("span", { class: "step-state" }),
    time: h("span", { class: "step-time elapsed" }),
    message: h("span", { class: "step-message" }),
  };
  const node = h("li", { class: "step", testid: "step" },
    h("span", { class: "step-name" }), refs.state, refs.time, refs.message);
  node.refs = refs;
  return node;
}

function updateStep(node, { step, migration }) {
  const r = node.refs;
  setData(node, "step", step.name);
  setData(node, "state", step.state);
  setText(node.firstElementChild, step.name);
  setText(r.state, words(step.state));
  const time = stepTime(step);
  setText(r.time, time.text);
  if (time.since === null) delete r.time.dataset.since;
  else setData(r.time, "since", String(time.since));
  const progress = step.state === "running" && step.name === "start" ? data.progress.get(migration.id) : null;
  const message = progress ?? step.message ?? "";
  setText(r.message, message);
  r.message.title = message;
}

function createMigration() {
  const refs = {
    workload: h("strong"),
    route: h("span", { class: "route" }),
    state: h("span", { class: "state" }),
    dry: h("span", { class: "tag", text: "dry run", hidden: true }),
    meta: h("span"),
    took: h("span", { class: "elapsed" }),
    steps: h("ol", { class: "steps" }),
    reason: h("p", { class: "reason", hidden: true }),
    actions: h("div", { class: "actions" }),
    status: h("p", { class: "action-status", role: "status" }),
    cancel: null,
  };
  const node = h("li", { class: "migration", testid: "migration" },
    h("div", { class: "mig-head" }, refs.workload, refs.route, refs.dry, refs.state),
    h("p", { class: "meta" }, refs.meta, refs.took), refs.steps, refs.reason, refs.actions);
  node.tabIndex = -1;
  refs.actions.append(refs.status);
  node.refs = refs;
  return node;
}

function updateMigration(node, m) {
  const r = node.refs;
  setData(node, "id", m.id);
  setData(node, "workload", m.workload);
  setData(node, "state", m.state);
  setText(r.workload, m.workload);
  setText(r.route, `${m.from} → ${m.to}`);
  setText(r.state, words(m.state));
  r.state.className = `state state-${m.state}`;
  show(r.dry, Boolean(m.dryRun));

  const created = seconds(m.createdAt);
  const ended = seconds(m.endedAt);
  const parts = [m.id, `by ${m.createdBy}`];
  if (created !== null) parts.push(`started ${clock(new Date(created))}`);
  if (typeof m.monthlySavings === "number") parts.push(chart.savingPhrase(m.monthlySavings, money));
  const took = created === null ? "" : duration((ended ?? Date.now()) - created);
  setText(r.meta, `${parts.join(" · ")} · ${ended === null ? "running for" : "took"} `);
  setText(r.took, took);
  if (ended === null && created !== null) setData(r.took, "since", String(created));
  else delete r.took.dataset.since;

  reconcile(r.steps, (m.steps ?? []).map((step) => ({ step, migration: m })), (x) => x.step.name, createStep, updateStep);

  const why = { rollingBack: "Rolling back", rolledBack: "Rolled back", failed: "Failed", cancelled: "Cancelled" }[m.state];
  setText(r.reason, why && m.reason ? `${why}: ${m.reason}` : "");
  show(r.reason, Boolean(why && m.reason));

  const cancellable = session?.operate && !FINAL.has(m.state) && m.state !== "rollingBack";
  if (cancellable && !r.cancel) {
    r.cancel = h("button", {
      type: "button",
      class: "secondary",
      testid: "cancel-migration",
      text: "Cancel",
      "aria-label": `Cancel the migration of ${m.workload}`,
      onclick: () => cancelMigration(node),
    });
    r.actions.prepend(r.cancel);
  } else if (!cancellable && r.cancel) {
    // Focus on the button that goes stays in its migration, not lost to the page.
    const focused = r.cancel === document.activeElement;
    r.cancel.remove();
    r.cancel = null;
    // Its room stays: what is below does not move when it ends.
    node.classList.add("ended-here");
    if (focused) node.focus({ preventScroll: true });
  }
}

function cancelMigration(node) {
  const id = encodeURIComponent(node.dataset.id);
  act(node, node.refs.cancel, "Cancelling…",
    (token) => api(token, "POST", `/api/v1/migrations/${id}/cancel`),
    () => {
      refresh("migrations");
      return "Cancel requested: it rolls back.";
    });
}

function renderMigrations() {
  let past = 0;
  const shown = data.migrations.filter((m) => !FINAL.has(m.state) || past++ < MAX_PAST_MIGRATIONS);
  reconcile($("migrations"), shown, (m) => m.id, createMigration, updateMigration);
  show($("migrations-empty"), data.migrations.length === 0);
  const hidden = data.migrations.length - shown.length;
  setText($("migrations-more"), hidden > 0 ? `${hidden} older migrations are not shown: ferry get migrations lists them all.` : "");
  show($("migrations-more"), hidden > 0);
}

/** Running steps and migrations count up every second, in place. */
function tick() {
  const now = Date.now();
  for (const node of document.querySelectorAll(".elapsed[data-since]")) {
    setText(node, duration(now - Number(node.dataset.since)));
  }
}

// --- cost over time

function renderCost() {
  const points = data.history;
  const spanDays = points.length > 1
    ? (Date.parse(points[points.length - 1].at) - Date.parse(points[0].at)) / 86_400_000 : 0;
  const spanMinutes = spanDays * 1440;
  const time = spanDays > 1
    ? (d) => d.toLocaleString(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" })
    : (d) => clock(d, spanMinutes < 10 ? "2-digit" : undefined);
  const last = points[points.length - 1];
  const series = last ? chart.draw($("cost-chart"), points, { money, shortMoney, time, migrations: data.migrations }) : [];
  if (!last) $("cost-chart").replaceChildren();
  reconcile($("cost-legend"), series, (s) => s.name, (s) => {
    const value = h("span", { class: "value" });
    const li = h("li", {}, chart.swatch(s.index), h("span", { text: s.name }), value);
    li.refs = { value };
    return li;
  }, (li, s) => setText(li.refs.value, last ? money(s.value(last)) : ""));
  if (!last) {
    setText($("cost-summary"), "No samples yet: the broker takes one at an interval and after each migration.");
    return;
  }
  const first = points[0];
  let text = `${money(last.total)} a month now`;
  if (points.length > 1) {
    const change = last.total - first.total;
    const since = time(new Date(first.at));
    text += Math.abs(change) < 0.005
      ? `, as at ${since}.`
      : `: ${money(Math.abs(change))} ${change < 0 ? "less" : "more"} than at ${since}.`;
  } else {
    text += ".";
  }
  text += chart.marksSummary(chart.marksOf(points, data.migrations), money);
  setText($("cost-summary"), text);
}

// --- sign-in

function tokenFromHash() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) history.replaceState(null, "", location.pathname + location.search);
  return token;
}

/** Forgets what the last session saw. */
function clearViews() {
  Object.assign(data, { clusters: [], workloads: [], placements: null, controllers: null, migrations: [], history: [] });
  data.progress.clear();
  document.querySelectorAll("#dashboard tbody, #dashboard [data-key]").forEach((n) => n.remove());
  $("cost-chart").replaceChildren();
  for (const id of ["clusters-empty", "plan-summary", "cost-summary"]) setText($(id), "Loading…");
  show($("clusters-empty"), true);
  for (const id of ["recs-empty", "unplaced", "migrations-empty", "migrations-more", "placement-empty"]) show($(id), false);
}

function endSession() {
  if (!session) return;
  session.controller.abort();
  clearTimeout(session.expiry);
  clearTimeout(retry);
  session = null;
  loadedAt = null;
  clearViews();
}

function signIn(raw) {
  const token = raw.trim();
  if (!token) return;
  endSession();
  const claims = claimsOf(token);
  session = { token, claims, operate: mayOperate(claims), controller: new AbortController(), expiry: 0 };
  sessionStorage.setItem(TOKEN_KEY, token);
  clearBanner();
  show($("sign-in-form"), false);
  $("token-input").value = "";
  const roles = Array.isArray(claims?.roles) ? claims.roles.join(", ") : "no role";
  const scope = Array.isArray(claims?.namespaces) ? ` · namespaces ${claims.namespaces.join(", ")}` : "";
  setText($("who-name"), `${claims?.sub ?? "unknown"} (${roles}${scope})`);
  show($("who"), true);
  // The broker checks `exp` (a minute's leeway): ask it then; its 401 signs out.
  if (typeof claims?.exp === "number") {
    const wait = Math.min(claims.exp * 1000 + 61_000 - Date.now(), 2 ** 31 - 1);
    session.expiry = setTimeout(() => refresh("clusters"), Math.max(wait, 0));
  }
  const s = session;
  refresh(...ALL);
  follow(token, {
    signal: s.controller.signal,
    onStatus: (state, retryMs) => s === session && setConnection(state, retryMs),
    onOpen: () => s === session && refresh(...ALL),
    onEvent: (event) => s === session && onEvent(event),
    onRejected: (error) => s === session && signOut(rejection(error)),
  });
}

/** Back to the sign-in form; `reason` (a rejected token) shows in the banner. */
function signOut(reason) {
  endSession();
  sessionStorage.removeItem(TOKEN_KEY);
  show($("dashboard"), false);
  show($("who"), false);
  setConnection("signed-out");
  if (reason) banner("auth", reason);
  else clearBanner();
  show($("sign-in-form"), true);
  $("token-input").focus();
}

function start() {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token-input").value);
  });
  $("sign-out").addEventListener("click", () => signOut());
  for (const id of ["filter-namespace", "filter-cluster", "filter-label"]) $(id).addEventListener("input", applyFilters);
  window.addEventListener("hashchange", () => {
    const token = tokenFromHash();
    if (token) signIn(token);
  });
  setInterval(tick, 1000);
  const token = tokenFromHash() ?? sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else signOut();
}

start();
