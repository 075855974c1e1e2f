// The console: a hash router over a few views. Live updates poll the ledger every 2 s for
// entries newer than the last one seen (docs/console.md says why polling, not SSE).
import "./style.css";
import { ApiError, clearSession, download, getJson, saveSession, session, tenantPath } from "./api.js";
import { UtilizationChart } from "./chart.js";
import { announce, el, localToUtc, table, utilizationBar } from "./dom.js";

const POLL_MS = 2000;
const PAGE = 50;
const PERIODS = ["today", "week", "month", "quarter", "year"];

let cleanup = [];

function stopView() {
  for (const fn of cleanup) fn();
  cleanup = [];
}

function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return signOut("Your key is no longer valid.");
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  cleanup.push(() => {
    stopped = true;
    clearTimeout(timer);
  });
}

function view() {
  return document.getElementById("view");
}

function message(error) {
  if (error instanceof ApiError) {
    if (error.status === 403) return `Not allowed: ${error.message}`;
    return error.message;
  }
  return String(error && error.message ? error.message : error);
}

function showLogin(error = "") {
  stopView();
  document.getElementById("nav").hidden = true;
  view().hidden = true;
  view().replaceChildren();
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = error;
  document.title = "Sign in · Budget Ledger console";
  document.getElementById("api-key").focus();
}

function signOut(why = "") {
  clearSession();
  if (location.hash !== "") history.replaceState(null, "", location.pathname);
  showLogin(why);
}

async function signIn(event) {
  event.preventDefault();
  const keyInput = document.getElementById("api-key");
  const tenantInput = document.getElementById("tenant");
  const errorBox = document.getElementById("login-error");
  const key = keyInput.value.trim();
  errorBox.textContent = "";
  if (!key) {
    errorBox.textContent = "Enter an API key.";
    keyInput.focus();
    return;
  }
  try {
    const who = await getJson("/console/session", key);
    const tenant = who.tenant_id || tenantInput.value.trim();
    if (!tenant) {
      errorBox.textContent = "This is a platform key: name the tenant to show.";
      tenantInput.focus();
      return;
    }
    saveSession(key, tenant);
    keyInput.value = "";
    tenantInput.value = "";
    // A changed hash routes by itself (hashchange); the same hash needs the call.
    if (location.hash === "#/budgets") route();
    else location.hash = "#/budgets";
  } catch (error) {
    errorBox.textContent =
      error instanceof ApiError && error.status === 401 ? "That key is unknown or revoked." : message(error);
    keyInput.focus();
  }
}

function page(title, ...children) {
  stopView();
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  const heading = el("h1", { text: title, tabindex: "-1" });
  view().replaceChildren(heading, ...children);
  view().hidden = false;
  document.title = `${title} · Budget Ledger console`;
  heading.focus();
}

function errorLine(error) {
  return el("p", { class: "error", role: "alert", text: message(error) });
}

// A pager over cursor pages: `load(cursor)` renders a page and returns its next_cursor.
function pager(label, load) {
  const stack = [null];
  const prev = el("button", { type: "button", text: "Previous page" });
  const next = el("button", { type: "button", text: "Next page" });
  const where = el("span", { class: "muted" });
  let nextCursor = null;
  const show = async () => {
    prev.disabled = true;
    next.disabled = true;
    nextCursor = await load(stack[stack.length - 1]);
    prev.disabled = stack.length <= 1;
    next.disabled = !nextCursor;
    where.textContent = `page ${stack.length}`;
  };
  prev.addEventListener("click", () => {
    stack.pop();
    show();
  });
  next.addEventListener("click", () => {
    stack.push(nextCursor);
    show();
  });
  const box = el("nav", { class: "pager", "aria-label": label }, prev, where, next);
  return { box, show, reset: () => stack.splice(1) && undefined };
}

function reportControls(label, path, name) {
  const id = `period-${Math.random().toString(36).slice(2, 8)}`;
  const select = el("select", { id }, PERIODS.map((p) => el("option", { value: p, text: p, selected: p === "month" })));
  const status = el("span", { class: "muted", role: "status" });
  const get = (format) => async () => {
    status.textContent = "";
    try {
      await download(path({ period: select.value, format }), `${name}-${select.value}.${format}`);
      status.textContent = `${format.toUpperCase()} report downloaded.`;
    } catch (error) {
      status.textContent = message(error);
    }
  };
  return el(
    "div",
    { class: "row" },
    el("div", { class: "field" }, el("label", { for: id, text: `${label} period` }), select),
    el("button", { type: "button", text: "Download JSON report", onclick: get("json") }),
    el("button", { type: "button", text: "Download CSV report", onclick: get("csv") }),
    status,
  );
}

async function budgetsView() {
  const { tenant } = session();
  const list = el("div", { id: "budget-list" });
  const p = pager("Budget pages", async (cursor) => {
    try {
      const data = await getJson(tenantPath("/budgets", { limit: PAGE, cursor }));
      const rows = data.budgets.map((b) =>
        el(
          "tr",
          { "data-budget": b.budget_id },
          el("th", { scope: "row" }, el("a", { href: `#/budget/${encodeURIComponent(b.budget_id)}`, text: b.budget_id })),
          el("td", {}, utilizationBar(b)),
          el("td", { text: `${b.available} ${b.currency}` }),
          el("td", { text: `${b.limit} ${b.currency}` }),
        ),
      );
      list.replaceChildren(
        rows.length
          ? table(`Budgets of ${tenant}`, ["Budget", "Utilization", "Available", "Limit"], rows, { id: "budgets" })
          : el("p", { text: "This tenant has no budgets yet." }),
      );
      announce(`${rows.length} budgets shown`);
      // The first render after a navigation: bench/console_load.py reads this mark's time.
      performance.mark("budgets-rendered");
      return data.next_cursor;
    } catch (error) {
      list.replaceChildren(errorLine(error));
      return null;
    }
  });
  page(
    `Budgets of ${tenant}`,
    el("h2", { text: "Tenant report" }),
    reportControls("Report", (q) => tenantPath("/report", q), `report-${tenant}`),
    el("h2", { text: "Budgets" }),
    list,
    p.box,
  );
  await p.show();
}

function alertRows(alerts) {
  return alerts.map((a) =>
    el(
      "tr",
      { "data-alert": a.alert_id },
      el("td", { text: a.recorded_at }),
      el("td", { text: a.budget_id }),
      el("td", { text: a.type }),
      el("td", { text: a.severity }),
      el("td", { text: `${a.utilization_pct}%` }),
    ),
  );
}

function ledgerRows(entries) {
  return entries.map((e) =>
    el(
      "tr",
      { "data-seq": String(e.sequence) },
      el("td", { text: String(e.sequence) }),
      el("td", { text: e.recorded_at }),
      el("td", { text: e.type }),
      el("td", { text: e.amount === null ? "" : e.amount }),
      el("td", { text: e.available }),
      el("td", { text: `${e.utilization_pct}%` }),
      el("td", { text: e.reason || "" }),
    ),
  );
}

function summary(b) {
  const item = (term, value) => el("div", {}, el("dt", { text: term }), el("dd", { text: value }));
  return el(
    "div",
    {},
    utilizationBar(b),
    el(
      "dl",
      { class: "summary" },
      item("Funded", `${b.funded} ${b.currency}`),
      item("Reserved", `${b.reserved} ${b.currency}`),
      item("Charged", `${b.charged} ${b.currency}`),
      item("Available", `${b.available} ${b.currency}`),
      item("Limit", `${b.limit} ${b.currency}`),
      item("Sequence", String(b.sequence)),
    ),
  );
}

async function budgetView(bid) {
  const base = `/budgets/${encodeURIComponent(bid)}`;
  const head = el("div", { id: "budget-summary", "aria-live": "polite" });
  const chartBox = el("div", { id: "chart", class: "chart", role: "img", "aria-label": `Utilization of ${bid} over time` });
  const alertsBox = el("div", { id: "budget-alerts" });
  const ledgerBox = el("div", { id: "ledger" });
  const fromId = "ledger-from";
  const toId = "ledger-to";
  const fromInput = el("input", { id: fromId, type: "datetime-local", step: "1" });
  const toInput = el("input", { id: toId, type: "datetime-local", step: "1" });
  let filter = { from: "", to: "" };
  const ledgerPager = pager("Ledger pages", async (cursor) => {
    try {
      const data = await getJson(tenantPath(`${base}/ledger`, { limit: PAGE, cursor, ...filter }));
      const headers = ["Seq", "Recorded (UTC)", "Type", "Amount", "Available", "Utilization", "Reason"];
      ledgerBox.replaceChildren(
        data.entries.length
          ? table(`Ledger of ${bid}, newest first`, headers, ledgerRows(data.entries), { id: "ledger-table" })
          : el("p", { text: "No ledger entries in this range." }),
      );
      return data.next_cursor;
    } catch (error) {
      ledgerBox.replaceChildren(errorLine(error));
      return null;
    }
  });
  const filterForm = el(
    "form",
    { class: "row", "aria-label": "Ledger date filter" },
    el("div", { class: "field" }, el("label", { for: fromId, text: "From (local time)" }), fromInput),
    el("div", { class: "field" }, el("label", { for: toId, text: "To (local time)" }), toInput),
    el("button", { type: "submit", text: "Apply filter" }),
    el("button", {
      type: "button",
      text: "Clear filter",
      onclick: () => {
        fromInput.value = "";
        toInput.value = "";
        filter = { from: "", to: "" };
        ledgerPager.reset();
        ledgerPager.show();
      },
    }),
  );
  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    filter = { from: localToUtc(fromInput.value), to: localToUtc(toInput.value) };
    ledgerPager.reset();
    ledgerPager.show();
  });

  let budget;
  try {
    budget = await getJson(tenantPath(base));
  } catch (error) {
    page(`Budget ${bid}`, el("p", {}, el("a", { href: "#/budgets", text: "All budgets" })), errorLine(error));
    return;
  }
  page(
    `Budget ${bid}`,
    el("p", {}, el("a", { href: "#/budgets", text: "All budgets" })),
    head,
    el("h2", { text: "Utilization over time" }),
    el("p", { class: "muted", id: "live", text: "Live: new ledger entries appear every 2 seconds." }),
    chartBox,
    el("h2", { text: "Report" }),
    reportControls("Report", (q) => tenantPath(`${base}/report`, q), `report-${bid}`),
    el("h2", { text: "Alerts" }),
    alertsBox,
    el("h2", { text: "Ledger" }),
    filterForm,
    ledgerBox,
    ledgerPager.box,
  );
  head.replaceChildren(summary(budget));

  const chart = new UtilizationChart(chartBox);
  cleanup.push(() => chart.destroy());
  let last = null; // the newest entry seen: {sequence, recorded_at}
  const first = await getJson(tenantPath(`${base}/ledger`, { limit: 1000 }));
  if (first.entries.length) last = first.entries[0];
  chart.add([...first.entries].reverse());

  const loadAlerts = async () => {
    const data = await getJson(tenantPath("/alerts", { budget_id: bid, limit: 20 }));
    alertsBox.replaceChildren(
      data.alerts.length
        ? table(`Latest alerts of ${bid}`, ["Recorded (UTC)", "Budget", "Type", "Severity", "Utilization"], alertRows(data.alerts), { id: "alerts-table" })
        : el("p", { text: "No alerts yet." }),
    );
  };
  await Promise.all([loadAlerts().catch((e) => alertsBox.replaceChildren(errorLine(e))), ledgerPager.show()]);

  every(POLL_MS, async () => {
    // Entries at or after the newest seen time (`from` is inclusive), older sequences dropped.
    const fresh = [];
    let cursor = null;
    for (let i = 0; i < 10; i += 1) {
      const data = await getJson(
        tenantPath(`${base}/ledger`, { limit: 1000, cursor, from: last ? last.recorded_at : "" }),
      );
      fresh.push(...data.entries.filter((e) => !last || e.sequence > last.sequence));
      cursor = data.next_cursor;
      if (!cursor) break;
    }
    if (!fresh.length) return;
    fresh.sort((a, b) => a.sequence - b.sequence);
    last = fresh[fresh.length - 1];
    chart.add(fresh);
    head.replaceChildren(summary(await getJson(tenantPath(base))));
    await loadAlerts();
    if (!filter.from && !filter.to && ledgerPager.box.querySelector(".muted").textContent === "page 1") {
      await ledgerPager.show();
    }
    announce(`${fresh.length} new ledger entries`);
  });
}

async function alertsView() {
  const { tenant } = session();
  const box = el("div", { id: "all-alerts" });
  const p = pager("Alert pages", async (cursor) => {
    try {
      const data = await getJson(tenantPath("/alerts", { limit: PAGE, cursor }));
      box.replaceChildren(
        data.alerts.length
          ? table(`Alerts of ${tenant}, newest first`, ["Recorded (UTC)", "Budget", "Type", "Severity", "Utilization"], alertRows(data.alerts), { id: "alerts-table" })
          : el("p", { text: "No alerts yet." }),
      );
      return data.next_cursor;
    } catch (error) {
      box.replaceChildren(errorLine(error));
      return null;
    }
  });
  page(`Alerts of ${tenant}`, box, p.box);
  await p.show();
}

async function webhooksView() {
  const { tenant } = session();
  const box = el("div", { id: "webhooks" });
  page(`Webhooks of ${tenant}`, el("p", { class: "muted", text: "Endpoints and their delivery logs need a key with the write scope." }), box);
  try {
    const data = await getJson(tenantPath("/webhooks"));
    const rows = data.webhooks.map((w) =>
      el(
        "tr",
        {},
        el("th", { scope: "row" }, el("a", { href: `#/webhooks/${encodeURIComponent(w.id)}`, text: w.url })),
        el("td", { text: w.alert_kinds ? w.alert_kinds.join(", ") : "every kind" }),
        el("td", { text: w.budget_id || "every budget" }),
        el("td", { text: w.disabled_at ? `disabled (${w.disabled_reason || ""})` : w.failing_since ? `failing since ${w.failing_since}` : "active" }),
      ),
    );
    box.replaceChildren(
      rows.length
        ? table("Endpoints", ["URL (opens its delivery log)", "Alert kinds", "Budget", "State"], rows, { id: "webhooks-table" })
        : el("p", { text: "No webhook endpoints registered." }),
    );
  } catch (error) {
    box.replaceChildren(errorLine(error));
  }
}

async function deliveriesView(eid) {
  const base = `/webhooks/${encodeURIComponent(eid)}/deliveries`;
  const box = el("div", { id: "deliveries" });
  const p = pager("Delivery pages", async (cursor) => {
    try {
      const data = await getJson(tenantPath(base, { limit: PAGE, cursor }));
      const rows = data.deliveries.map((d) =>
        el(
          "tr",
          {},
          el("td", { text: d.created_at }),
          el("td", { text: d.alert_type }),
          el("td", { text: d.status }),
          el("td", { text: String(d.attempts) }),
          el("td", { text: d.last_status === null ? "" : String(d.last_status) }),
          el("td", { text: d.latency_ms === null ? "" : `${d.latency_ms} ms` }),
          el("td", { text: d.last_error || "" }),
        ),
      );
      box.replaceChildren(
        rows.length
          ? table("Deliveries, newest first", ["Created (UTC)", "Alert", "Status", "Attempts", "Last status", "Latency", "Last error"], rows, { id: "deliveries-table" })
          : el("p", { text: "No deliveries yet." }),
      );
      return data.next_cursor;
    } catch (error) {
      box.replaceChildren(errorLine(error));
      return null;
    }
  });
  page(`Delivery log of ${eid}`, el("p", {}, el("a", { href: "#/webhooks", text: "All endpoints" })), box, p.box);
  await p.show();
}

async function route() {
  if (!session()) return showLogin();
  const hash = location.hash || "#/budgets";
  const parts = hash.slice(2).split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "budget" && parts[1]) return await budgetView(parts[1]);
    if (parts[0] === "alerts") return await alertsView();
    if (parts[0] === "webhooks" && parts[1]) return await deliveriesView(parts[1]);
    if (parts[0] === "webhooks") return await webhooksView();
    return await budgetsView();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return signOut("Your key is no longer valid.");
    view().append(errorLine(error));
  }
}

function start() {
  document.getElementById("login-form").addEventListener("submit", signIn);
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", route);
  route();
}

start();
