// riskstream analyst console: framework-free on purpose (no build step, nothing to audit
// beyond this file). Every value from the server is written with textContent, never as
// HTML, so an id or reason text cannot inject markup.
"use strict";

const $ = (sel) => document.querySelector(sel);
// effects: what the analyst's own click did (threshold before → after), per transaction, so a
// later live "review" event for the same label does not wipe it from the case view
const state = { alerts: new Map(), order: [], selected: null, source: null, numbersDue: null, effects: new Map() };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  if (options.body !== undefined) {
    init.method = "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(options.body);
  }
  const resp = await fetch(path, init);
  const data = await resp.json().catch(() => ({}));
  if (resp.status === 401) { showLogin(data.needs_password); throw new Error("login"); }
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

const fmtScore = (x) => (x == null ? "–" : Number(x).toFixed(3));
const fmtPct = (x) => (x == null ? "–" : `${(100 * x).toFixed(1)}%`);
const fmtTime = (ms) => new Date(ms).toLocaleTimeString();
function fmtAmount(ctx) {
  if (!ctx) return "–";
  return `${Number(ctx.amount).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })} ${ctx.currency}`;
}

// ---- login ----
function showLogin(needsPassword) {
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-password-row").hidden = !needsPassword;
  if (state.source) { state.source.close(); state.source = null; }
}

$("#login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  try {
    await api("/console/api/login", { body: { analyst: $("#login-name").value, password: $("#login-password").value } });
    await start();
  } catch (err) {
    if (err.message !== "login") $("#login-error").textContent = err.message;
    else $("#login-error").textContent = "wrong name or password";
  }
});

$("#logout").addEventListener("click", async () => {
  await fetch("/console/api/logout", { method: "POST", credentials: "same-origin" });
  showLogin(false);
});

// ---- queue ----
function filters() {
  return {
    min: parseFloat($("#f-min").value) || 0,
    channel: $("#f-channel").value,
    country: $("#f-country").value.trim().toUpperCase(),
    status: $("#f-status").value,
    q: $("#f-q").value.trim(),
  };
}

function matches(a, f) {
  const ctx = a.context || {};
  if (a.score < f.min) return false;
  if (f.channel && ctx.channel !== f.channel) return false;
  if (f.country && (ctx.country || "").toUpperCase() !== f.country) return false;
  if (f.q && f.q !== a.user_id && f.q !== a.transaction_id) return false;
  if (f.status === "open" && a.review) return false;
  if (f.status === "reviewed" && !a.review) return false;
  return true;
}

function statusTag(a) {
  if (!a.review) return el("span", { class: "tag open", text: "open" });
  return el("span", { class: `tag ${a.review.label}`, text: a.review.label === "fraud" ? "fraud" : "legit" });
}

function scoreBar(a) {
  const bar = el("span", { class: "bar", title: `score ${fmtScore(a.score)} vs threshold ${fmtScore(a.threshold)}` });
  const fill = el("i"); fill.style.width = `${Math.min(100, a.score * 100)}%`;
  const mark = el("b"); mark.style.left = `${Math.min(100, a.threshold * 100)}%`;
  bar.append(fill, mark);
  return el("span", {}, bar, el("span", { class: "num", text: ` ${fmtScore(a.score)} / ${fmtScore(a.threshold)}` }));
}

// the top reason in words; every reason in the tooltip
function reasonCell(a) {
  const reasons = a.reasons || [];
  return el("td", { class: "reason", title: reasons.map((r) => r.text).join("; "),
    text: reasons.length ? reasons[0].text + (reasons.length > 1 ? ` (+${reasons.length - 1})` : "") : "" });
}

function similarText(a) {
  const cases = a.similar_cases || [];
  if (!cases.length) return "none";
  return `${cases.length} · best ${cases[0].similarity.toFixed(2)}`;
}

function row(a, fresh) {
  const ctx = a.context || {};
  const tr = el("tr", { "data-alert": a.alert_id, "data-testid": "alert-row", class: fresh ? "fresh" : "" },
    el("td", { class: "num", text: fmtTime(a.received_ms) }),
    el("td", { text: a.user_id }),
    el("td", { class: "num", text: fmtAmount(ctx) }),
    el("td", { text: `${ctx.merchant_id || "–"} · ${ctx.mcc || "–"}` }),
    el("td", { text: ctx.channel || "–" }),
    el("td", { text: ctx.country || "–" }),
    el("td", {}, scoreBar(a)),
    reasonCell(a),
    el("td", { class: "similar", "data-testid": "similar", text: similarText(a) }),
    el("td", { class: "model", "data-testid": "model", text: a.model_version || "–" }),
    el("td", {}, statusTag(a)));
  if (a.alert_id === state.selected) tr.classList.add("selected");
  tr.addEventListener("click", () => openCase(a.alert_id));
  return tr;
}

function render(freshId) {
  const f = filters();
  const body = $("#queue tbody");
  const rows = [];
  for (let i = state.order.length - 1; i >= 0 && rows.length < 300; i--) {
    const a = state.alerts.get(state.order[i]);
    if (a && matches(a, f)) rows.push(row(a, a.alert_id === freshId));
  }
  body.replaceChildren(...rows);
  $("#queue-empty").hidden = rows.length > 0;
}

function remember(a) {
  if (!state.alerts.has(a.alert_id)) state.order.push(a.alert_id);
  state.alerts.set(a.alert_id, a);
}

async function loadQueue() {
  // merged with what the live stream already delivered (it is opened first, so nothing
  // published between the two requests is missed)
  const data = await api("/console/api/alerts?status=all&limit=1000");
  for (const a of data.alerts.reverse()) if (!state.alerts.has(a.alert_id)) remember(a);
  state.order.sort((x, y) => state.alerts.get(x).received_ms - state.alerts.get(y).received_ms);
  render();
}

function connect() {
  if (state.source) state.source.close();
  const src = new EventSource("/console/api/stream");
  src.onopen = () => $("#live").classList.add("on");
  src.onerror = () => $("#live").classList.remove("on");
  src.addEventListener("alert", (ev) => {
    const a = JSON.parse(ev.data);
    remember(a);
    render(a.alert_id);
    if (!state.numbersDue) {  // refresh the numbers at most once a second while alerts flow
      state.numbersDue = setTimeout(() => { state.numbersDue = null; loadNumbers().catch(() => {}); }, 1000);
    }
  });
  src.addEventListener("review", (ev) => {
    const r = JSON.parse(ev.data);
    for (const a of state.alerts.values()) {
      if (a.transaction_id === r.transaction_id) a.review = { label: r.label, analyst: r.analyst, at: r.at };
    }
    render();
    if (state.selected) {
      const a = state.alerts.get(state.selected);
      if (a && a.transaction_id === r.transaction_id) showDecision(a.review, state.effects.get(a.transaction_id));
    }
  });
  state.source = src;
}

// ---- numbers ----
async function loadNumbers() {
  const n = await api("/console/api/numbers");
  const box = $("#numbers");
  const parts = [];
  for (const [name, w] of Object.entries(n)) {
    parts.push(el("div", { class: "window" },
      el("div", { text: `last ${name}` }),
      el("div", {}, el("b", { text: String(w.alerts) }), ` alerts · rate ${fmtPct(w.alert_rate)}`),
      el("div", {}, `reviewed ${fmtPct(w.share_reviewed)} · confirmed ${fmtPct(w.confirmed_share)}`)));
  }
  box.replaceChildren(...parts);
}

// ---- case view ----
function fact(dl, name, value) { dl.append(el("dt", { text: name }), el("dd", { text: value })); }

function showDecision(review, extra) {
  const p = $("#decision");
  if (!review) { p.textContent = ""; $("#confirm").disabled = false; $("#legit").disabled = false; return; }
  let text = `Labelled ${review.label === "fraud" ? "fraud" : "legitimate"}${review.analyst ? ` by ${review.analyst}` : ""}.`;
  if (extra) text += ` ${extra}`;
  p.textContent = text;
  $("#confirm").disabled = review.label === "fraud";
  $("#legit").disabled = review.label === "legit";
}

function chart(history) {
  const svg = $("#chart");
  svg.replaceChildren();
  if (!history.length) return;
  const ns = "http://www.w3.org/2000/svg";
  const t0 = history[0].ts_ms, t1 = history[history.length - 1].ts_ms;
  const span = Math.max(1, t1 - t0);
  const maxAmt = Math.max(...history.map((h) => h.amount), 1);
  for (const h of history) {
    const x = 10 + 580 * (h.ts_ms - t0) / span;
    const y = 130 - 115 * Math.sqrt(h.amount / maxAmt);
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", x); line.setAttribute("x2", x);
    line.setAttribute("y1", 130); line.setAttribute("y2", y);
    line.setAttribute("stroke", h.current ? "#c62828" : "#9aa5b8");
    line.setAttribute("stroke-width", h.current ? 3 : 1.5);
    const title = document.createElementNS(ns, "title");
    title.textContent = `${h.time} ${h.amount}`;
    line.append(title);
    svg.append(line);
  }
}

async function openCase(alertId) {
  state.selected = alertId;
  render();
  const data = await api(`/console/api/case/${encodeURIComponent(alertId)}`);
  if (state.selected !== alertId) return;
  const a = data.alert;
  const ctx = a.context || {};
  $("#case").hidden = false;
  $("#case-title").textContent = `Alert on ${a.user_id}`;
  const dl = $("#case-facts");
  dl.replaceChildren();
  fact(dl, "Transaction", a.transaction_id);
  fact(dl, "Amount", fmtAmount(ctx));
  fact(dl, "Merchant / MCC", `${ctx.merchant_id || "–"} / ${ctx.mcc || "–"}`);
  fact(dl, "Channel / country", `${ctx.channel || "–"} / ${ctx.country || "–"}`);
  fact(dl, "Event time", a.event_time);
  fact(dl, "Score", fmtScore(a.score));
  fact(dl, "Threshold at scoring", fmtScore(a.threshold));
  fact(dl, "User's threshold now", fmtScore(data.current_threshold));
  fact(dl, "Model", a.model_version);
  $("#case-reasons").replaceChildren(...(a.reasons || []).map((r) =>
    el("li", { text: `${r.text} (${r.contribution >= 0 ? "+" : ""}${r.contribution.toFixed(3)})` })));
  const similar = a.similar_cases || [];
  $("#case-similar").replaceChildren(...(similar.length ? similar.map((c) =>
    el("li", { text: `${c.case_id} — similarity ${c.similarity.toFixed(2)}` })) : [el("li", { class: "muted", text: "none" })]));
  const profiles = data.profiles || [];
  $("#case-profiles").replaceChildren(...(profiles.length ? profiles.map((p) =>
    el("div", { class: "profile" },
      el("h4", { text: p.entity === "merchant" ? "Merchant" : "Device" }),
      el("table", {}, el("tbody", {}, ...p.rows.map((r) =>
        el("tr", {}, el("td", { text: r.label }), el("td", { class: "num", text: r.value }))))))) :
    [el("p", { class: "muted", text: "no merchant or device on this transaction" })]));
  $("#history-count").textContent = `(${data.history.length} events)`;
  chart(data.history);
  $("#history tbody").replaceChildren(...data.history.slice().reverse().map((h) => {
    const flags = [h.new_merchant ? "new merchant" : "", h.new_country ? "new country" : ""].filter(Boolean).join(", ");
    return el("tr", { class: h.current ? "current" : "" },
      el("td", { class: "num", text: h.time.replace("T", " ").slice(0, 19) }),
      el("td", { class: "num", text: h.amount.toFixed(2) }),
      el("td", { text: h.mcc }), el("td", { text: h.channel }), el("td", { text: h.country || "–" }),
      el("td", { text: h.merchant || "–" }), el("td", { text: flags }));
  }));
  showDecision(a.review, state.effects.get(a.transaction_id));
}

async function decide(label) {
  const alertId = state.selected;
  if (!alertId) return;
  $("#confirm").disabled = true; $("#legit").disabled = true;
  $("#decision").textContent = "Sending…";
  try {
    const r = await api("/console/api/decision", { body: { alert_id: alertId, label } });
    const a = state.alerts.get(alertId);
    if (a) a.review = r.review;
    let effect = "";
    if (r.status === "already") effect = "(already recorded; nothing sent)";
    else if (r.applied) effect = `User's threshold ${fmtScore(r.threshold_before)} → ${fmtScore(r.threshold_after)}.`;
    else effect = `Sent; the user's threshold (${fmtScore(r.threshold_after)}) has not moved yet.`;
    if (a && !(r.status === "already" && state.effects.has(a.transaction_id))) {
      state.effects.set(a.transaction_id, effect);
    }
    showDecision(r.review, state.effects.get(a ? a.transaction_id : "") || effect);
    if (r.status === "sent" && !r.applied) watchThreshold(alertId, r.review, r.threshold_before);
    render();
    loadNumbers().catch(() => {});
  } catch (err) {
    $("#decision").textContent = `Not sent: ${err.message}`;
    $("#confirm").disabled = false; $("#legit").disabled = false;
  }
}

// The worker applies labels asynchronously; when it is slower than the server's wait, keep
// checking for a while so the analyst still sees the effect of the click.
async function watchThreshold(alertId, review, before) {
  for (let i = 0; i < 30 && state.selected === alertId; i++) {
    await new Promise((ok) => setTimeout(ok, 1000));
    const data = await api(`/console/api/case/${encodeURIComponent(alertId)}`).catch(() => null);
    if (data && Math.abs(data.current_threshold - before) > 1e-9) {
      const effect = `User's threshold ${fmtScore(before)} → ${fmtScore(data.current_threshold)}.`;
      state.effects.set(data.alert.transaction_id, effect);
      if (state.selected === alertId) showDecision(review, effect);
      return;
    }
  }
}

$("#confirm").addEventListener("click", () => decide("fraud"));
$("#legit").addEventListener("click", () => decide("legit"));
$("#case-close").addEventListener("click", () => { state.selected = null; $("#case").hidden = true; render(); });
for (const id of ["#f-min", "#f-channel", "#f-country", "#f-status", "#f-q"]) {
  $(id).addEventListener("input", () => render());
}

async function start() {
  const me = await api("/console/api/me");
  $("#analyst").textContent = me.analyst;
  const sel = $("#f-channel");
  if (sel.options.length === 1) for (const c of me.channels) sel.append(el("option", { value: c, text: c }));
  $("#login").hidden = true;
  $("#app").hidden = false;
  connect();
  await loadQueue();
  await loadNumbers();
}

setInterval(() => { if (!$("#app").hidden) loadNumbers().catch(() => {}); }, 10000);
start().catch(() => {});
