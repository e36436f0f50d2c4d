// Herald console (docs/architecture.md §12). Plain JS, no framework, no inline script (the
// Content-Security-Policy forbids it). Every piece of data is put on the page with
// `textContent` (through `el`), never as HTML: a course named `<script>` shows as text.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

/** An element with attributes and children; strings become text nodes. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) { node.replaceChildren(); return node; }
function sum(xs) { return xs.reduce((a, b) => a + b, 0); }
function status(text) { $("status").textContent = text || ""; }

/** A call of the admin API with the session's cookie and CSRF token. */
async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (opts.body !== undefined) {
    opts.method = opts.method || "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.body);
  }
  if (opts.method && opts.method !== "GET") opts.headers["X-CSRF-Token"] = CSRF;
  const r = await fetch(path, opts);
  if (r.status === 401) { location.assign("/console/login?expired"); throw new Error("logged out"); }
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
  if (!r.ok) {
    const reason = body && (body.reason || body.error) || r.statusText;
    throw new Error(`${r.status}: ${reason}`);
  }
  return body;
}

function ago(iso) {
  if (!iso) return "-";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function countdown(iso) {
  if (!iso) return "-";
  let s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (s <= 0) return "expired";
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return (d ? `${d}d ` : "") + `${h}h ${String(m).padStart(2, "0")}m ${String(s).padStart(2, "0")}s`;
}

/** "route(sink, sink) route2(sink)" from a tapped event's deliveries. */
function routesOf(deliveries) {
  if (!deliveries || deliveries.length === 0) return "no route (dropped)";
  const groups = [];
  for (const [route, sink] of deliveries) {
    const last = groups[groups.length - 1];
    if (last && last[0] === route) last[1].push(sink); else groups.push([route, [sink]]);
  }
  return groups.map(([r, s]) => `${r}(${s.join(", ")})`).join(" ");
}

const SVG = "http://www.w3.org/2000/svg";

/** A small bar chart (inline SVG) of deliveries (up) and failures (down) a minute. */
function chart(delivered, failed, label) {
  const n = Math.max(delivered.length, 1), w = 120, h = 32, mid = h / 2, bw = w / n;
  const max = Math.max(1, ...delivered, ...failed);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  svg.setAttribute("role", "img");
  svg.setAttribute("class", "chart");
  const title = document.createElementNS(SVG, "title");
  title.textContent = label;
  svg.append(title);
  const bar = (i, v, up, cls) => {
    if (!v) return;
    const r = document.createElementNS(SVG, "rect");
    const len = Math.max(1, (v / max) * (mid - 1));
    r.setAttribute("x", (i * bw).toFixed(2)); r.setAttribute("width", Math.max(bw - 0.3, 0.5).toFixed(2));
    r.setAttribute("y", up ? (mid - len).toFixed(2) : mid.toFixed(2)); r.setAttribute("height", len.toFixed(2));
    r.setAttribute("class", cls);
    svg.append(r);
  };
  delivered.forEach((v, i) => bar(i, v, true, "delivered"));
  failed.forEach((v, i) => bar(i, v, false, "failed"));
  const axis = document.createElementNS(SVG, "line");
  axis.setAttribute("x1", 0); axis.setAttribute("x2", w); axis.setAttribute("y1", mid); axis.setAttribute("y2", mid);
  axis.setAttribute("class", "axis");
  svg.append(axis);
  return svg;
}

/** The deliveries of a tapped event with the outcome this gateway recorded for each. */
async function showOutcomes(t, list, details) {
  const e = t.event || {};
  const params = new URLSearchParams({ source: e.source || "", id: e.id || "" });
  for (const [route, sink] of t.deliveries || []) { params.append("route", route); params.append("sink", sink); }
  for (;;) {
    let rows;
    try { rows = await api(`/api/outcomes?${params}`); } catch (err) { clear(list).append(el("li", { class: "bad" }, err.message)); return; }
    clear(list).append(...rows.map((d) => el("li", { "data-sink": d.sink, class: d.outcome === "delivered" ? "ok" : d.outcome ? "bad" : "" },
      `route ${d.route} → sink ${d.sink}: ${d.outcome || "not attempted by this gateway yet"}`)));
    const settled = rows.every((d) => d.outcome === "delivered" || d.outcome === "dead");
    if (settled || !details.open || !details.isConnected) return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** One tapped event: a line, expandable to its deliveries and JSON. */
function eventItem(t) {
  const e = t.event || {};
  const list = el("ul", { class: "deliveries" });
  const details = el("details", {},
    el("summary", {}, `${e.time || "-"} ${e.type || "-"} ${e.subject || "-"} → ${routesOf(t.deliveries)}`),
    el("h3", {}, "Deliveries ", el("span", { class: "tag" }, "this gateway")),
    list,
    el("pre", {}, JSON.stringify(t, null, 2)));
  if (!t.deliveries || t.deliveries.length === 0) list.append(el("li", { class: "muted" }, "No route matched: nothing was delivered."));
  else details.addEventListener("toggle", () => { if (details.open) showOutcomes(t, list, details); });
  return el("li", {}, details);
}

// ---- pages -------------------------------------------------------------------------------

const pages = {};
let current = null;
let timer = null;

function show(name) {
  if (!pages[name]) name = "overview";
  if (current && pages[current].leave) pages[current].leave();
  clearInterval(timer); timer = null;
  for (const sec of document.querySelectorAll("main > section")) sec.hidden = sec.id !== `page-${name}`;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  current = name;
  status("");
  const page = pages[name];
  const tick = () => page.load().catch((e) => status(`Could not load: ${e.message}`));
  tick();
  if (page.poll) timer = setInterval(tick, page.poll);
}

// Overview: polls /api/overview every 2 s.
pages.overview = {
  poll: POLL_MS,
  async load() {
    const o = await api("/api/overview");
    const g = o.gateway;
    $("gateway").textContent = `Gateway ${g.holder} · queue ${g.engine}${g.shared ? " (shared)" : ""} · started ${ago(g.started)} · ${g.config}`;
    const cluster = clear($("cluster"));
    cluster.hidden = !g.shared;
    if (g.shared) {
      cluster.append(el("p", {}, `The whole cluster's: ${g.cluster_views.join(", ")}. This gateway's only: ${g.gateway_views.join(", ")}.`));
      if (g.gateways.length) {
        cluster.append(el("div", { class: "scroll" }, el("table", { id: "gateways" },
          el("caption", {}, "Gateways sharing the queue"),
          el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Gateway"), el("th", { scope: "col" }, "Version"), el("th", { scope: "col" }, "Started"), el("th", { scope: "col" }, "Last seen"))),
          el("tbody", {}, ...g.gateways.map((x) => {
            const stale = Date.now() - Date.parse(x.last_seen) > 2 * g.lease_ms;
            return el("tr", { "data-holder": x.holder },
              el("th", { scope: "row" }, x.holder, x.this ? " (this one)" : ""),
              el("td", {}, x.version), el("td", {}, ago(x.started)),
              el("td", { class: stale ? "warn" : "" }, ago(x.last_seen) + (stale ? " (not seen lately)" : "")));
          })))));
      }
    }
    const r = o.readiness;
    clear($("readiness")).append(
      el("p", {}, el("strong", { class: r.ready ? "ok" : "bad" }, r.ready ? "Ready" : "Not ready"),
        r.ready ? "" : `: ${r.reason}`),
      ...(r.notes || []).map((n) => el("p", { class: "warn" }, `Note: ${n}`)));
    clear($("sinks").tBodies[0]).append(...o.sinks.map((s) => el("tr", { "data-sink": s.name },
      el("th", { scope: "row" }, s.name),
      el("td", { title: s.destination }, s.type),
      el("td", { "data-col": "pending" }, s.pending),
      el("td", { "data-col": "delivered" }, s.delivered),
      el("td", {}, s.retried),
      el("td", { "data-col": "dead" }, s.dead),
      el("td", { class: s.circuit === "closed" ? "ok" : "bad" }, s.circuit),
      el("td", { "data-col": "next-retry", title: s.next_retry || "" }, s.next_retry ? (Date.parse(s.next_retry) <= Date.now() ? "due now" : `in ${countdown(s.next_retry)}`) : "-"),
      el("td", { "data-col": "chart" },
        chart(s.chart.delivered, s.chart.failed, `${s.name}: ${sum(s.chart.delivered)} delivered, ${sum(s.chart.failed)} failed attempts in the last hour, one bar a minute`),
        el("span", { class: "sr-only" }, `${sum(s.chart.delivered)} delivered, ${sum(s.chart.failed)} failed in the last hour`)))));
    const q = o.queue;
    $("queue").textContent = q
      ? `Queue: ${q.undelivered_events} undelivered event(s)${q.max_events ? ` of at most ${q.max_events}` : ""}, ${q.undelivered_bytes} bytes${q.max_bytes ? ` of at most ${q.max_bytes}` : ""}; ${q.dead_letters} dead letter(s).`
      : "Queue statistics are unavailable.";
    clear($("sources").tBodies[0]).append(...o.sources.map((s) => el("tr", { "data-source": s.name },
      el("th", { scope: "row" }, s.name),
      el("td", {}, s.type),
      el("td", {}, s.events),
      el("td", { "data-col": "rate" }, s.per_second.toFixed(2)),
      el("td", {}, s.last ? `${s.last.type} ${s.last.subject || ""} (${ago(s.last.time)})` : "none since start"))));
    clear($("recent"));
    if (o.recent.length === 0) $("recent").append(el("li", { class: "muted" }, "No event since this gateway started."));
    else $("recent").append(...o.recent.map(eventItem));
  },
};

// Dead letters: the same operations as `herald dlq`.
const dlq = { letters: [] };
pages.dlq = {
  async load() {
    const params = new URLSearchParams();
    const sink = $("dlq-sink").value, route = $("dlq-route").value.trim(), age = $("dlq-age").value;
    if (sink) params.set("sink", sink);
    if (route) params.set("route", route);
    if (age) params.set("older_than_ms", age);
    const [letters, overview] = await Promise.all([api(`/api/dlq?${params}`), api("/api/overview")]);
    const select = $("dlq-sink");
    const known = new Set([...select.options].map((o) => o.value));
    for (const s of overview.sinks) if (!known.has(s.name)) select.append(el("option", { value: s.name }, s.name));
    dlq.letters = letters;
    const body = clear($("dlq-table").tBodies[0]);
    $("dlq-empty").hidden = letters.length > 0;
    $("dlq-table").hidden = letters.length === 0;
    for (const l of letters) {
      const delivery = l.kind === "delivery";
      const last = delivery ? (l.attempts.length ? l.attempts[l.attempts.length - 1].error : l.reason) : l.input.reason;
      body.append(el("tr", { "data-id": l.id },
        el("td", {}, el("input", { type: "checkbox", value: l.id, "aria-label": `Select dead letter ${l.id}` })),
        el("td", {}, l.id),
        el("td", {}, l.created),
        el("td", {}, delivery ? l.sink : "(rejected)"),
        el("td", {}, delivery ? l.route : l.input.source),
        el("td", {}, delivery ? `${l.event.type} ${l.event.subject || ""}` : "-"),
        el("td", {}, last),
        el("td", {},
          el("button", { type: "button", onclick: () => detail(l.id) }, "Details"), " ",
          delivery ? el("button", { type: "button", onclick: () => replay({ ids: [l.id] }, `dead letter ${l.id}`) }, "Replay") : "")));
    }
  },
};

async function detail(id) {
  const box = $("dlq-detail");
  try {
    const l = await api(`/api/dlq/${encodeURIComponent(id)}`);
    clear(box).append(el("h2", {}, `Dead letter ${l.id}`), el("p", {}, `Created ${l.created}`));
    if (l.kind === "delivery") {
      box.append(el("p", {}, `Route ${l.route} → sink ${l.sink}: ${l.reason}`),
        el("h3", {}, "Attempts"),
        el("ol", {}, ...l.attempts.map((a) => el("li", {}, `${new Date(a.at).toISOString()}  ${a.error}`))),
        el("h3", {}, "Event"), el("pre", {}, JSON.stringify(l.event, null, 2)));
    } else {
      box.append(el("p", {}, `Rejected input from source ${l.input.source}, received ${l.input.received}: ${l.input.reason}`),
        el("pre", {}, l.input.body));
    }
    box.append(el("button", { type: "button", onclick: () => { box.hidden = true; } }, "Close"));
    box.hidden = false;
    box.focus();
  } catch (e) { $("dlq-result").textContent = `Could not load dead letter ${id}: ${e.message}`; }
}

function confirmThen(text, action) {
  $("dlq-confirm-text").textContent = text;
  $("dlq-confirm").hidden = false;
  $("dlq-confirm-yes").onclick = async () => { $("dlq-confirm").hidden = true; await action(); };
  $("dlq-confirm-no").onclick = () => { $("dlq-confirm").hidden = true; };
  $("dlq-confirm-no").focus();
}

async function replay(selection, what) {
  try {
    const r = await api("/api/dlq/replay", { body: selection });
    const skipped = r.skipped.map(([id, why]) => ` skipped ${id}: ${why}.`).join("");
    $("dlq-result").textContent = `Replayed ${r.replayed.length} dead letter${r.replayed.length === 1 ? "" : "s"} (${what}).${skipped}`;
  } catch (e) { $("dlq-result").textContent = `Replay failed: ${e.message}`; }
  await pages.dlq.load().catch(() => {});
}

function wireDlq() {
  $("dlq-filter").addEventListener("submit", (ev) => { ev.preventDefault(); pages.dlq.load().catch((e) => status(e.message)); });
  $("dlq-replay-selected").addEventListener("click", () => {
    const ids = [...document.querySelectorAll("#dlq-table tbody input:checked")].map((c) => Number(c.value));
    if (ids.length === 0) { $("dlq-result").textContent = "Select dead letters first."; return; }
    replay({ ids }, `${ids.length} selected`);
  });
  $("dlq-replay-sink").addEventListener("click", () => {
    const sink = $("dlq-sink").value;
    if (!sink) { $("dlq-result").textContent = "Choose a sink in the filter first."; return; }
    confirmThen(`Replay every dead letter of sink ${sink}?`, () => replay({ sink }, `all of sink ${sink}`));
  });
  $("dlq-purge").addEventListener("click", () => {
    const ids = dlq.letters.map((l) => l.id);
    if (ids.length === 0) { $("dlq-result").textContent = "Nothing to purge."; return; }
    confirmThen(`Purge the ${ids.length} dead letter(s) shown? They cannot be replayed afterwards.`, async () => {
      try {
        const r = await api("/api/dlq/purge", { body: { ids } });
        $("dlq-result").textContent = `Purged ${r.purged} dead letter${r.purged === 1 ? "" : "s"}.`;
      } catch (e) { $("dlq-result").textContent = `Purge failed: ${e.message}`; }
      await pages.dlq.load().catch(() => {});
    });
  });
}

// Google subscriptions: the same admin API as `herald google`.
const google = { rows: [] };
pages.google = {
  poll: 1000,
  async load() {
    if (!google.loaded || Date.now() - google.loaded > 10000) {
      google.rows = await api("/api/google");
      google.loaded = Date.now();
      renderGoogle();
    }
    for (const cell of document.querySelectorAll("#google-table [data-expires]")) cell.textContent = countdown(cell.dataset.expires);
  },
};

function renderGoogle() {
  const body = clear($("google-table").tBodies[0]);
  $("google-empty").hidden = google.rows.length > 0;
  for (const r of google.rows) {
    body.append(el("tr", { "data-name": r.name },
      el("th", { scope: "row" }, r.name, r.id ? el("div", { class: "muted" }, r.id) : ""),
      el("td", {}, r.kind),
      el("td", { "data-expires": r.expires || "" }, countdown(r.expires)),
      el("td", { "data-col": "renewed", title: r.renewed || "" }, r.renewed ? ago(r.renewed) : "-"),
      el("td", {}, r.renews ? `${r.renews} (in ${countdown(r.renews)})` : "-"),
      el("td", { class: r.health === "ok" ? "ok" : "bad" }, r.health),
      el("td", {}, r.last_error ? `${r.last_error} (${r.failures} failure${r.failures === 1 ? "" : "s"})` : "-"),
      el("td", {},
        el("button", { type: "button", onclick: () => googleAct("renew", r.name) }, "Renew"), " ",
        el("button", { type: "button", class: "danger", onclick: () => {
          if (window.confirm(`Stop ${r.name}? Google stops sending its notifications until it is renewed.`)) googleAct("stop", r.name);
        } }, "Stop"))));
  }
}

async function googleAct(what, name) {
  $("google-result").textContent = `${what === "renew" ? "Renewing" : "Stopping"} ${name || "all"}…`;
  try {
    const r = await api(`/api/google/${what}`, { body: { name } });
    $("google-result").textContent = what === "renew"
      ? `Renewed ${r.renewed.length ? r.renewed.join(", ") : "nothing"}.`
      : `${r.stopped}`;
  } catch (e) { $("google-result").textContent = `${what} failed: ${e.message}`; }
  google.loaded = 0;
  await pages.google.load().catch(() => {});
}

// Try a route: POST /api/try, shown as `herald test` shows it.
pages.try = {
  async load() {
    if ($("try-source").options.length) return;
    const o = await api("/api/overview");
    $("try-source").append(...o.sources.map((s) => el("option", { value: s.name }, `${s.name} (${s.type})`)));
  },
};

function wireTry() {
  $("try-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = clear($("try-result"));
    const raw = document.querySelector('input[name="kind"]:checked').value === "raw";
    const body = raw
      ? { source: $("try-source").value, raw: $("try-input").value, headers: $("try-headers").value.split("\n").map((h) => h.trim()).filter(Boolean) }
      : { event: $("try-input").value };
    try {
      const r = await api("/api/try", { body });
      if (r.sync) { out.append(el("p", {}, "A sync message: the source acknowledges it and routes nothing.")); return; }
      const e = r.event;
      out.append(el("h2", {}, `Event ${e.id} ${e.type} from ${e.source}`));
      if (r.routes.length === 0 && r.deliveries.length === 0) out.append(el("p", { id: "try-none" }, "No route matched; nothing would be sent."));
      else out.append(el("p", {}, `Matching routes: ${r.routes.length ? r.routes.join(", ") : "none (unmatched)"}`));
      for (const l of r.lookups || []) out.append(el("p", { class: "muted" }, `enriched.${l.member} ← ${l.from_body ? "from the event's body" : `${l.method} ${l.id}`}: ${l.fields.join(", ")}`));
      for (const d of r.deliveries) {
        const card = el("div", { class: "card delivery" },
          el("h3", {}, `route ${d.route} → sink ${d.sink} (${d.sink_type})`),
          el("p", { class: "muted" }, d.destination));
        if (d.error) card.append(el("p", { class: "bad" }, `error: ${d.error}`));
        const fields = Object.entries(d.rendered || {});
        if (d.rendered && fields.length === 0) card.append(el("p", {}, "(the event as a JSON record)"));
        if (fields.length) card.append(el("dl", {}, ...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, el("pre", {}, String(v)))])));
        out.append(card);
      }
    } catch (e) { out.append(el("p", { class: "bad", role: "alert" }, e.message)); }
  });
}

// Config: the masked file, `herald check`'s summary, the last reload.
pages.config = {
  async load() {
    const c = await api("/api/config");
    $("config-file-title").textContent = `${c.file} (secrets masked)`;
    $("config-summary").textContent = c.summary.join("\n");
    $("config-text").textContent = c.text;
    const r = c.last_reload;
    const box = clear($("config-reload"));
    if (!r) box.append(el("p", {}, "No reload since the gateway started."));
    else {
      box.append(el("p", {}, el("strong", { class: r.applied ? "ok" : "bad" }, r.applied ? "Last reload applied" : "Last reload refused"),
        ` ${r.at} (${r.trigger})${r.applied ? "" : "; the running config stays"}`));
      if (r.errors.length) box.append(el("ul", {}, ...r.errors.map((e) => el("li", { class: "bad" }, e))));
    }
  },
};

// Live events: the tap (`GET /-/tap`, JSON lines) read as a stream.
const live = { controller: null };
pages.live = {
  async load() { if (!live.controller) startLive(); },
  leave() { stopLive(); },
};

function stopLive() {
  if (live.controller) live.controller.abort();
  live.controller = null;
  $("live-state").textContent = "Paused.";
}

async function startLive() {
  stopLive();
  const params = new URLSearchParams();
  const f = $("live-filter").value.trim(), r = $("live-route").value.trim();
  if (f) params.append("filter", f);
  if (r) params.append("route", r);
  const controller = new AbortController();
  live.controller = controller;
  try {
    const resp = await fetch(`/-/tap?${params}`, { credentials: "same-origin", signal: controller.signal });
    if (resp.status === 401) { location.assign("/console/login?expired"); return; }
    if (!resp.ok) {
      const b = await resp.json().catch(() => ({}));
      $("live-state").textContent = `The tap refused: ${b.reason || resp.status}`;
      live.controller = null;
      return;
    }
    $("live-state").textContent = "Watching: events routed from now on appear below.";
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl); pending = pending.slice(nl + 1);
        if (!line.trim()) continue;
        let t; try { t = JSON.parse(line); } catch (_) { continue; }
        const list = $("live-events");
        list.prepend(t.lagged ? el("li", { class: "warn" }, `… ${t.lagged} events skipped: this view fell behind`) : eventItem(t));
        while (list.children.length > 200) list.lastChild.remove();
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") $("live-state").textContent = `The tap stopped: ${e.message}`;
  }
}

function wireLive() {
  $("live-form").addEventListener("submit", (ev) => { ev.preventDefault(); startLive(); });
  $("live-stop").addEventListener("click", stopLive);
}

// ---- start -------------------------------------------------------------------------------

$("logout-csrf").value = CSRF;
$("google-renew-all").addEventListener("click", () => googleAct("renew", null));
wireDlq();
wireTry();
wireLive();
window.addEventListener("hashchange", () => show(location.hash.slice(1)));
show(location.hash.slice(1) || "overview");
