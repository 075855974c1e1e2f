// The API client: the key lives in sessionStorage only (this tab; never a cookie, localStorage
// or a URL) and every call sends it as a bearer header.
const KEY = "budget-ledger.key";
const TENANT = "budget-ledger.tenant";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

export function session() {
  const key = sessionStorage.getItem(KEY);
  const tenant = sessionStorage.getItem(TENANT);
  return key && tenant ? { key, tenant } : null;
}

export function saveSession(key, tenant) {
  sessionStorage.setItem(KEY, key);
  sessionStorage.setItem(TENANT, tenant);
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(TENANT);
}

async function detail(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return `HTTP ${response.status}`;
  }
}

// GET `path` (absolute, e.g. "/v1/...") with the bearer header; the Response when 2xx.
export async function request(path, key) {
  const k = key || (session() || {}).key;
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${k}` },
    cache: "no-store",
    credentials: "omit",
  });
  if (!response.ok) throw new ApiError(response.status, await detail(response));
  return response;
}

export async function getJson(path, key) {
  return (await request(path, key)).json();
}

// A path under the signed-in tenant, with query parameters (null/"" left out).
export function tenantPath(suffix, params = {}) {
  const s = session();
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, String(value));
  }
  const q = query.toString();
  return `/v1/tenants/${encodeURIComponent(s.tenant)}${suffix}${q ? `?${q}` : ""}`;
}

// Fetch with the header, then save the body through a Blob: a plain link cannot carry the key.
export async function download(path, fallbackName) {
  const response = await request(path);
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = match ? match[1] : fallbackName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
