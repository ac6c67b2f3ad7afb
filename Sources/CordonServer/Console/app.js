// The console's shell: sign-in, the navigation a role may use, and the router that hands the
// URL's view to its page. Every view is in the URL, so a link or a reload shows the same thing.
import * as api from "/console/api.js";
import { h, replace } from "/console/dom.js";
import { atLeast, parseRoute } from "/console/logic.js";
import { fleetPage } from "/console/fleet.js";
import { hostPage } from "/console/host.js";
import { mapPage } from "/console/map.js";
import { rolloutsPage, rulesetsPage, auditPage } from "/console/policy.js";

const pages = { fleet: fleetPage, host: hostPage, map: mapPage, rollouts: rolloutsPage, rulesets: rulesetsPage, audit: auditPage };
const view = document.getElementById("view");

function signInForm(message) {
  const token = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "cordon_api_…", size: 50 });
  const error = h("p", { class: "error", id: "sign-in-error" }, message ?? "");
  const form = h("form", { id: "sign-in", onsubmit: async (event) => {
    event.preventDefault();
    try {
      await api.signIn(token.value.trim());
      token.value = "";
      await show();
    } catch (failure) { error.textContent = failure.message; }
  } },
  h("h1", {}, "Sign in"),
  h("p", {}, "An API token of any role (viewer or higher). It is exchanged for a session that lasts 8 hours; the token is not kept."),
  h("label", { for: "token" }, "API token "), token, " ", h("button", { type: "submit", id: "sign-in-button" }, "Sign in"), error);
  replace(view, form);
  token.focus();
}

function chrome() {
  const session = api.current();
  const nav = document.getElementById("nav");
  nav.hidden = !session;
  for (const link of nav.querySelectorAll("[data-role]")) link.hidden = !session || !atLeast(session.role, link.dataset.role);
  replace(document.getElementById("who"), session ? `${session.name} (${session.role})` : "");
  document.getElementById("sign-out").hidden = !session;
}

let shown = 0;
async function show() {
  const token = ++shown;
  chrome();
  if (!api.current()) return signInForm();
  listen();
  const route = parseRoute(location.hash);
  const page = pages[route.page] ?? fleetPage;
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("current", link.getAttribute("href") === "#/" + route.page);
  try {
    await page(view, route, { stale: () => token !== shown });
  } catch (failure) {
    if (failure.status === 401) { await api.restore(); stopListening(); chrome(); return signInForm("Your session has ended; sign in again."); }
    replace(view, h("p", { class: "error" }, failure.message));
  }
}

// Live updates: the server says which host or rollout changed (server-sent events); the page
// showing it is read again, at most every 2 s, and never while someone is typing into it.
const interested = {
  host: (route, id) => route.page === "fleet" || (route.page === "host" && route.id === id),
  rollout: (route) => route.page === "rollouts",
};
let events = null, refreshTimer = null, lastRefresh = 0;

function refreshSoon() {
  if (refreshTimer) return;
  const delay = Math.max(0, 2000 - (Date.now() - lastRefresh));
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    if (view.querySelector("input:focus, textarea:focus, select:focus, [data-busy]")) return refreshSoon();
    lastRefresh = Date.now();
    show();
  }, delay);
}

function listen() {
  if (events || !api.current()) return;
  events = new EventSource("/api/v1/events");
  const live = document.getElementById("live");
  events.addEventListener("open", () => { live.hidden = false; refreshSoon(); });
  events.addEventListener("error", () => { live.hidden = true; if (!api.current()) stopListening(); });
  for (const kind of Object.keys(interested)) {
    events.addEventListener(kind, (event) => {
      const { id } = JSON.parse(event.data);
      if (interested[kind](parseRoute(location.hash), id)) refreshSoon();
    });
  }
}

function stopListening() {
  events?.close();
  events = null;
  document.getElementById("live").hidden = true;
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await api.signOut().catch(() => {});
  stopListening();
  show();
});
window.addEventListener("hashchange", show);
api.restore().then(show, (failure) => replace(view, h("p", { class: "error" }, failure.message)));
