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
  const route = parseRoute(location.hash);
  const page = pages[route.page] ?? fleetPage;
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("current", link.getAttribute("href") === "#/" + route.page);
  try {
    await page(view, route, { stale: () => token !== shown });
  } catch (failure) {
    if (failure.status === 401) { await api.restore(); chrome(); return signInForm("Your session has ended; sign in again."); }
    replace(view, h("p", { class: "error" }, failure.message));
  }
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await api.signOut().catch(() => {});
  show();
});
window.addEventListener("hashchange", show);
api.restore().then(show, (failure) => replace(view, h("p", { class: "error" }, failure.message)));
