// The API as the console calls it: the session cookie goes by itself (same origin), and every
// request that changes anything carries the session's CSRF token.

let session = null;

export function current() { return session; }

export class APIError extends Error {
  constructor(status, body) {
    super(body?.error ?? `HTTP ${status}`);
    this.status = status;
    this.field = body?.field ?? null;
  }
}

export async function call(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session) headers["X-CSRF-Token"] = session.csrf_token;
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin", cache: "no-store",
  });
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) throw new APIError(response.status, json);
  return json;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body ?? {});

export async function restore() {
  try { session = await get("/api/v1/session"); } catch (error) {
    if (error.status !== 401 && error.status !== 404) throw error;
    session = null;
  }
  return session;
}

export async function signIn(token) {
  session = await call("POST", "/api/v1/session", { token });
  return session;
}

export async function signOut() {
  try { await call("DELETE", "/api/v1/session"); } finally { session = null; }
}
