// The ringcast dashboard: one page, a view per hash route, everything through the broker's
// own REST API, WebSocket API and /metrics. The token (admin key or project_admin JWT) is
// kept in sessionStorage and sent as `Authorization: Bearer`. Text from the server is always
// set as textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "ringcast.token";
let token = sessionStorage.getItem(TOKEN_KEY);
let leave = null; // cleanup of the current view (timers, sockets)

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return e;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
  }
}

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: Object.assign({ Authorization: `Bearer ${token}` },
      body === undefined ? {} : { "Content-Type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) {
    // A stored token that stops working (rotated key, expired JWT): back to sign-in.
    if (r.status === 401 && sessionStorage.getItem(TOKEN_KEY)) signOut("Your key or token was refused; sign in again.");
    throw new ApiError(r.status, data && data.error, data && data.message);
  }
  return data;
}

function pretty(v) {
  return JSON.stringify(v, null, 2);
}

function when(ts) {
  const d = new Date(ts);
  return isNaN(d) ? String(ts) : d.toLocaleString();
}

function status(text, isError) {
  return h("p", { class: isError ? "status error" : "status", role: "status", "aria-live": "polite", text });
}

function say(out, text, isError) {
  out.textContent = text;
  out.className = isError ? "status error" : "status";
}

function card(k, v, id) {
  return h("div", { class: "card" }, h("div", { class: "k", text: k }), h("div", { class: "v", id, text: v }));
}

// Two titled charts side by side (stacked on narrow screens).
function pair(title1, chart1, title2, chart2) {
  return h("div", { class: "grid2" },
    h("section", {}, h("h3", { text: title1 }), chart1),
    h("section", {}, h("h3", { text: title2 }), chart2));
}

// Runs `fn` now and every `ms`; returns the view's cleanup.
function every(ms, fn) {
  fn();
  const timer = setInterval(fn, ms);
  return () => clearInterval(timer);
}

function field(labelText, input) {
  return h("label", {}, labelText, input);
}

function table(headers, rows) {
  // Each cell names its column, for the stacked layout on narrow screens.
  for (const tr of rows) [...tr.children].forEach((td, i) => td.setAttribute("data-label", headers[i] || ""));
  return h("div", { class: "table-wrap" },
    h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows)));
}

// ---------- sign in ----------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  route(message);
}

function loginView(view, message) {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true });
  const out = status(message || "", Boolean(message));
  const form = h("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      token = input.value.trim();
      try {
        await api("GET", "/api/realtime/channels");
        sessionStorage.setItem(TOKEN_KEY, token);
        if (!location.hash || location.hash === "#/login") location.hash = "#/channels";
        route();
      } catch (e) {
        token = null;
        say(out, e.status === 403 ? "This token has no project_admin role." : `Sign-in failed: ${e.message}`, true);
      }
    },
  }, field("Admin key or project_admin token", input), h("button", { type: "submit", text: "Sign in" }), out);
  view.append(h("section", { class: "login" }, h("h2", { text: "Sign in" }),
    h("p", { text: "Use the broker's admin key (auth.admin_key) or a JWT with role project_admin." }), form));
  input.focus();
}

// ---------- channels ----------

function channelForm(c, onSave, onCancel) {
  const pattern = h("input", { name: "pattern", value: c ? c.pattern : "", required: true, placeholder: "chat:*" });
  const description = h("input", { name: "description", value: (c && c.description) || "" });
  const urls = h("textarea", { name: "webhookUrls", rows: 1, placeholder: "https://example.com/hook (one per line)" });
  urls.value = ((c && c.webhookUrls) || []).join("\n");
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: c ? c.enabled : true });
  return h("form", {
    class: "inline",
    onsubmit: (ev) => {
      ev.preventDefault();
      const list = urls.value.split(/\s+/).filter(Boolean);
      onSave({
        pattern: pattern.value.trim(),
        description: description.value.trim() || null,
        webhookUrls: list.length ? list : null,
        enabled: enabled.checked,
      });
    },
  }, field("Pattern", pattern), field("Description", description), field("Webhook URLs", urls),
  h("label", { class: "check" }, enabled, "Enabled"),
  h("button", { type: "submit", text: c ? "Save" : "Create channel" }),
  onCancel ? h("button", { type: "button", class: "quiet", onclick: onCancel, text: "Cancel" }) : null);
}

async function channelsView(view) {
  const out = status("");
  const list = h("div", {});
  const refresh = async () => {
    let channels;
    try {
      channels = await api("GET", "/api/realtime/channels");
    } catch (e) {
      say(out, e.message, true); return;
    }
    const rows = channels.map((c) => {
      const tr = h("tr", { "data-pattern": c.pattern },
        h("td", {}, h("code", { text: c.pattern })),
        h("td", { text: c.description || "" }),
        h("td", {}, (c.webhookUrls || []).map((u) => h("div", { text: u }))),
        h("td", {}, h("span", { class: c.enabled ? "badge on" : "badge off", text: c.enabled ? "enabled" : "disabled" })),
        h("td", {}, h("div", { class: "actions" },
          h("button", { type: "button", class: "quiet", text: "Edit", onclick: () => edit(tr, c) }),
          h("button", { type: "button", class: "quiet", text: c.enabled ? "Disable" : "Enable",
            onclick: () => save(c.id, { enabled: !c.enabled }, `${c.pattern} ${c.enabled ? "disabled" : "enabled"}`) }),
          h("button", { type: "button", class: "danger", text: "Delete", onclick: async () => {
            if (!confirm(`Delete channel ${c.pattern}? History keeps its messages.`)) return;
            try { await api("DELETE", `/api/realtime/channels/${c.id}`); say(out, `${c.pattern} deleted`); refresh(); }
            catch (e) { say(out, e.message, true); }
          } }))));
      return tr;
    });
    list.replaceChildren(channels.length
      ? table(["Pattern", "Description", "Webhook URLs", "State", ""], rows)
      : h("p", { text: "No channels yet: clients can only use names that an enabled channel's pattern matches." }));
  };
  const save = async (id, body, done) => {
    try { await api("PUT", `/api/realtime/channels/${id}`, body); say(out, done); refresh(); }
    catch (e) { say(out, e.message, true); }
  };
  const edit = (tr, c) => {
    const cell = h("td", { colspan: 5 }, channelForm(c, (body) => save(c.id, body, `${body.pattern} saved`), refresh));
    tr.replaceChildren(cell);
  };
  const create = channelForm(null, async (body) => {
    try {
      await api("POST", "/api/realtime/channels", body);
      say(out, `${body.pattern} created`);
      create.reset(); refresh();
    } catch (e) { say(out, e.message, true); }
  });
  view.append(h("h2", { text: "Channels" }), h("h3", { text: "New channel" }), create, out, list);
  await refresh();
}

// ---------- live tail ----------

function tailView(view) {
  const name = h("input", { name: "channel", required: true, placeholder: "chat:lobby" });
  const filter = h("input", { name: "event", placeholder: "any event" });
  const pauseBtn = h("button", { type: "button", class: "quiet", text: "Pause", disabled: true });
  const out = status("Not watching.");
  const list = h("div", { "aria-label": "Messages, newest first" });
  let ws = null, paused = false, held = [], count = 0;

  const show = (m) => {
    if (filter.value && m.event !== filter.value.trim()) return;
    const item = h("article", { class: "msg", "data-event": m.event },
      h("header", {}, h("strong", { text: m.event }), h("span", { text: `offset ${m.offset}` }),
        h("span", { text: when(m.createdAt || m.timestamp) }), h("span", { text: `${m.senderType || ""} ${m.senderId || ""}`.trim() })),
      h("pre", { text: pretty(m.payload) }));
    list.prepend(item);
    while (list.children.length > 500) list.lastChild.remove();
  };
  const stop = () => { if (ws) { ws.onclose = null; ws.close(); ws = null; } };
  const watch = (ev) => {
    ev.preventDefault();
    stop();
    list.replaceChildren(); held = []; count = 0; paused = false;
    pauseBtn.textContent = "Pause"; pauseBtn.disabled = false;
    const channel = name.value.trim();
    say(out, `Connecting to ${channel}…`);
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/realtime`);
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token }));
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === "auth_success") ws.send(JSON.stringify({ type: "subscribe", channel }));
      else if (m.type === "subscribed") { out.textContent = `Watching ${channel}.`; }
      else if (m.type === "message") {
        count++;
        if (paused) { held.push(m); pauseBtn.textContent = `Resume (${held.length} new)`; }
        else show(m);
      } else if (m.type === "error") { say(out, `${m.code}: ${m.message}`, true); }
      else if (m.type === "unsubscribed") { say(out, `Unsubscribed: ${m.reason || ""}`, true); }
    };
    ws.onclose = (e) => { say(out, `Connection closed (${e.code}${e.reason ? ": " + e.reason : ""}).`, true); };
  };
  pauseBtn.addEventListener("click", () => {
    paused = !paused;
    if (!paused) { held.forEach(show); held = []; }
    pauseBtn.textContent = paused ? "Resume" : "Pause";
  });
  view.append(h("h2", { text: "Live tail" }),
    h("form", { class: "inline", onsubmit: watch }, field("Channel name", name), field("Only event", filter),
      h("button", { type: "submit", text: "Watch" }), pauseBtn,
      h("button", { type: "button", class: "quiet", text: "Clear", onclick: () => list.replaceChildren() })),
    out, list);
  name.focus();
  return stop;
}

// ---------- history ----------

function historyView(view) {
  const inputs = {
    channelName: h("input", { name: "channelName", placeholder: "chat:lobby" }),
    eventName: h("input", { name: "eventName" }),
    since: h("input", { name: "since", placeholder: "2026-01-01 or RFC 3339" }),
    until: h("input", { name: "until" }),
  };
  const limit = h("select", { name: "limit" }, ["25", "100", "500", "1000"].map((n) => h("option", { value: n, text: n, selected: n === "100" })));
  const out = status("");
  const results = h("div", {});
  const search = async (ev) => {
    if (ev) ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, i] of Object.entries(inputs)) if (i.value.trim()) q.set(k, i.value.trim());
    q.set("limit", limit.value);
    try {
      const rows = await api("GET", `/api/realtime/messages?${q}`);
      say(out, `${rows.length} message${rows.length === 1 ? "" : "s"}, newest first.`);
      results.replaceChildren(table(["Time", "Channel", "Event", "Offset", "Sender", "Delivered", "Payload"], rows.map((m) =>
        h("tr", { "data-id": m.id },
          h("td", { text: when(m.createdAt) }), h("td", {}, h("code", { text: m.channelName })),
          h("td", { text: m.eventName }), h("td", { text: String(m.offset) }),
          h("td", { text: `${m.senderType}${m.senderId ? " " + m.senderId : ""}` }),
          h("td", { text: `${m.wsAudienceCount} ws, ${m.whDeliveredCount}/${m.whAudienceCount} webhooks` }),
          h("td", {}, h("details", {}, h("summary", { text: "payload" }), h("pre", { text: pretty(m.payload) })))))));
    } catch (e) { say(out, e.message, true); }
  };
  view.append(h("h2", { text: "History" }),
    h("form", { class: "inline", onsubmit: search },
      field("Channel name", inputs.channelName), field("Event", inputs.eventName),
      field("Since", inputs.since), field("Until", inputs.until), field("Limit", limit),
      h("button", { type: "submit", text: "Search" })),
    out, results);
  search();
}

// ---------- stats ----------

function statsView(view) {
  const cards = h("div", { class: "cards" });
  const top = h("div", {});
  const overTime = h("div", {});
  const out = status("");
  const refresh = async () => {
    try {
      const [s, recent] = await Promise.all([
        api("GET", "/api/realtime/messages/stats"),
        api("GET", "/api/realtime/messages?limit=1000"),
      ]);
      cards.replaceChildren(card("Messages in history", String(s.totalMessages), "stat-total"),
        card("Webhook delivery rate", `${(100 * s.whDeliveryRate).toFixed(1)} %`, "stat-webhooks"),
        card("Event names", String(s.topEvents.length), "stat-events"));
      top.replaceChildren(Chart.bars(s.topEvents.map((e) => ({ label: e.eventName, value: e.count })), "Messages per event name"));
      // The last hour of the most recent 1,000 messages, per minute.
      const now = Date.now(), minute = 60000, n = 60;
      const buckets = Array.from({ length: n }, (_, i) => ({ t: new Date(now - (n - 1 - i) * minute), value: 0 }));
      for (const m of recent) {
        const age = Math.floor((now - Date.parse(m.createdAt)) / minute);
        if (age >= 0 && age < n) buckets[n - 1 - age].value++;
      }
      overTime.replaceChildren(Chart.columns(buckets, "Messages per minute, last hour"));
      say(out, `Updated ${new Date().toLocaleTimeString()}.`);
    } catch (e) { say(out, e.message, true); }
  };
  view.append(h("h2", { text: "Stats" }), cards,
    pair("Messages over time", overTime, "Top events", top), out);
  return every(5000, refresh);
}

// ---------- node ----------

// Prometheus text: the sum of each family's samples (labels dropped), and webhook outcomes.
function parseMetrics(text) {
  const sums = {}, outcomes = {};
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)/);
    if (!m) continue;
    const v = Number(m[3]);
    sums[m[1]] = (sums[m[1]] || 0) + v;
    const o = m[2] && m[2].match(/outcome="([a-z]+)"/);
    if (m[1] === "ringcast_webhook_deliveries_total" && o) outcomes[o[1]] = v;
  }
  return { sums, outcomes };
}

function nodeView(view) {
  const health = h("div", { class: "cards" });
  const cards = h("div", { class: "cards" });
  const pubChart = h("div", {}), delChart = h("div", {});
  const out = status("");
  let last = null;
  const pubs = [], dels = [];
  const tick = async () => {
    try {
      const [hr, mr] = await Promise.all([fetch("/health"), fetch("/metrics")]);
      const hj = await hr.json();
      const { sums, outcomes } = parseMetrics(await mr.text());
      const at = performance.now();
      let pubRate = 0, delRate = 0;
      if (last) {
        const dt = (at - last.at) / 1000;
        pubRate = Math.max(0, ((sums.ringcast_published_total || 0) - last.pub) / dt);
        delRate = Math.max(0, ((sums.ringcast_deliveries_total || 0) - last.del) / dt);
        pubs.push(pubRate); dels.push(delRate);
        if (pubs.length > 60) { pubs.shift(); dels.shift(); }
      }
      last = { at, pub: sums.ringcast_published_total || 0, del: sums.ringcast_deliveries_total || 0 };
      health.replaceChildren(card("Health", hj.status, "node-health"), card("Engine", `${hj.engine}${hj.engineReachable ? "" : " (unreachable)"}`, "node-engine"),
        card("Node", hj.nodeId, "node-id"), card("Workers", String(hj.workers), "node-workers"));
      cards.replaceChildren(
        card("Connections", Chart.fmt(sums.ringcast_connections || 0), "node-connections"),
        card("Subscriptions", Chart.fmt(sums.ringcast_subscriptions || 0), "node-subscriptions"),
        card("Publishes /s", Chart.fmt(pubRate), "node-publishes"),
        card("Deliveries /s", Chart.fmt(delRate), "node-deliveries"),
        card("Published (total)", Chart.fmt(sums.ringcast_published_total || 0), "node-published-total"),
        card("Slow-consumer closes", Chart.fmt(sums.ringcast_slow_consumer_closes_total || 0), "node-slow"),
        card("Outcomes unknown", Chart.fmt(sums.ringcast_publish_outcomes_unknown_total || 0), "node-unknown"),
        card("Webhook backlog", Chart.fmt((sums.ringcast_webhook_pending || 0) + (sums.ringcast_webhook_in_flight || 0)), "node-webhook-backlog"),
        card("Webhooks delivered / failed", `${Chart.fmt(outcomes.delivered || 0)} / ${Chart.fmt((outcomes.failed || 0) + (outcomes.expired || 0) + (outcomes.dropped || 0))}`, "node-webhooks"));
      pubChart.replaceChildren(Chart.sparkline(pubs, "Publishes per second, last 2 minutes"));
      delChart.replaceChildren(Chart.sparkline(dels, "Deliveries per second, last 2 minutes"));
      say(out, `This node, updated ${new Date().toLocaleTimeString()}. With the redis engine each node reports its own figures.`);
    } catch (e) { say(out, `Cannot read the node: ${e.message}`, true); }
  };
  view.append(h("h2", { text: "Node" }), health, cards,
    pair("Publishes /s", pubChart, "Deliveries /s", delChart), out);
  return every(2000, tick);
}

// ---------- policies ----------

async function policiesView(view) {
  const out = status("");
  view.append(h("h2", { text: "Policies in force" }), out);
  try {
    const p = await api("GET", "/api/realtime/permissions");
    for (const [action, title] of [["subscribe", "Subscribe (realtime.channels, SELECT)"], ["publish", "Publish (realtime.messages, INSERT)"], ["receive", "Receive (realtime.messages, SELECT)"]]) {
      const list = (p[action] && p[action].policies) || [];
      view.append(h("h3", { text: title }), list.length
        ? table(["Name", "Roles", "Using", "With check"], list.map((x) =>
          h("tr", {}, h("td", {}, h("code", { text: x.policyName })), h("td", { text: x.roles.join(", ") }),
            h("td", {}, h("pre", { text: x.using || "" })), h("td", {}, h("pre", { text: x.withCheck || "" })))))
        : h("p", { text: "No policy: denied to every role but project_admin." }));
    }
  } catch (e) { say(out, e.message, true); }
}

// ---------- routing ----------

const VIEWS = {
  "#/channels": channelsView, "#/tail": tailView, "#/history": historyView,
  "#/stats": statsView, "#/node": nodeView, "#/policies": policiesView,
};

function route(message) {
  if (leave) { leave(); leave = null; }
  const view = document.getElementById("view");
  view.replaceChildren();
  const signedIn = Boolean(token);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("signout").hidden = !signedIn;
  if (!signedIn) { loginView(view, typeof message === "string" ? message : ""); return; }
  const hash = VIEWS[location.hash] ? location.hash : "#/channels";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === hash) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const r = VIEWS[hash](view);
  if (typeof r === "function") leave = r;
  view.focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => route());
document.getElementById("signout").addEventListener("click", () => signOut("Signed out."));
route();
