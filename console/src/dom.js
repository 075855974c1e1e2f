// Small DOM helpers: elements are built with textContent (never innerHTML of API data).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function announce(text) {
  document.getElementById("status").textContent = text;
}

// A table in a scrolling wrapper (narrow screens scroll the table, not the page).
export function table(caption, headers, rows, attrs = {}) {
  return el(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    el(
      "table",
      attrs,
      el("caption", { text: caption }),
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows),
    ),
  );
}

// The utilization bar: colour AND a text label by threshold (colour is never the only cue).
export function utilizationState(budget) {
  if (budget.hard_cap_approaching) return { key: "hard", label: "hard cap approaching" };
  if (budget.soft_cap_exceeded) return { key: "soft", label: "soft cap exceeded" };
  return { key: "ok", label: "below soft cap" };
}

export function utilizationBar(budget) {
  const pct = Number(budget.utilization_pct);
  const state = utilizationState(budget);
  const fill = el("span", { class: `fill ${state.key}` });
  fill.style.width = `${Math.max(0, Math.min(100, pct))}%`;
  return el(
    "div",
    { class: "util" },
    el(
      "div",
      {
        class: "bar",
        role: "meter",
        "aria-valuemin": "0",
        "aria-valuemax": "100",
        "aria-valuenow": String(Math.max(0, Math.min(100, pct))),
        "aria-label": `Utilization of ${budget.budget_id}`,
        "data-state": state.key,
      },
      fill,
    ),
    el("span", { class: `util-text ${state.key}`, text: `${budget.utilization_pct}% · ${state.label}` }),
  );
}

// datetime-local value (local time) → RFC 3339 UTC, or "" when empty.
export function localToUtc(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}
