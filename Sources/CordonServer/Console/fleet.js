// The fleet: every host, filtered by a selector with a live count, sorted by any column, paged.
import * as api from "/console/api.js";
import { h, replace } from "/console/dom.js";
import { formatRoute, hostFacts, sortHosts } from "/console/logic.js";

const PAGE = 50;
const COLUMNS = [
  ["hostname", "Host"], ["mode", "Mode"], ["connection", "Connection"], ["isolation", "Isolation"],
  ["sync", "Policy sync"], ["lost_events", "Lost events"], ["guard_restores", "Guard restores"],
];

/** Every host the selector matches: the API's pages of 1,000, fetched together. */
async function allHosts(selector) {
  const query = selector ? "&selector=" + encodeURIComponent(selector) : "";
  const first = await api.get(`/api/v1/hosts?limit=1000&offset=0${query}`);
  const rest = [];
  for (let offset = 1000; offset < (first.total ?? 0); offset += 1000) rest.push(api.get(`/api/v1/hosts?limit=1000&offset=${offset}${query}`));
  return first.items.concat(...(await Promise.all(rest)).map((page) => page.items));
}

export async function fleetPage(view, route, { stale }) {
  const { selector = "", sort = "hostname", order = "asc" } = route.params;
  const page = Math.max(0, parseInt(route.params.page ?? "0", 10) || 0);
  const go = (params) => { location.hash = formatRoute("fleet", null, { selector, sort, order, ...params }); };

  const preview = h("span", { id: "preview", class: "muted" });
  const input = h("input", { id: "selector", value: selector, placeholder: 'tier == "web"', size: 40 });
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const text = input.value.trim();
      if (!text) return replace(preview, "");
      try {
        const answer = await api.get("/api/v1/selectors/preview?selector=" + encodeURIComponent(text));
        replace(preview, `matches ${answer.matches} hosts`);
      } catch (failure) { replace(preview, h("span", { class: "error" }, failure.message)); }
    }, 250);
  });
  const form = h("form", { id: "filter", onsubmit: (event) => { event.preventDefault(); go({ selector: input.value.trim(), page: 0 }); } },
    h("label", { for: "selector" }, "Selector "), input, " ", h("button", { type: "submit" }, "Filter"), " ", preview);

  const hosts = sortHosts(await allHosts(selector), sort, order === "desc");
  if (stale()) return;
  const shown = hosts.slice(page * PAGE, (page + 1) * PAGE);
  const header = h("tr", {}, COLUMNS.map(([key, title]) => {
    const next = sort === key && order === "asc" ? "desc" : "asc";
    const mark = sort === key ? (order === "asc" ? " ▲" : " ▼") : "";
    return h("th", {}, h("a", { href: formatRoute("fleet", null, { selector, sort: key, order: next }), "data-sort": key }, title + mark));
  }));
  const rows = shown.map((host) => {
    const f = hostFacts(host);
    return h("tr", { class: f.isolated ? "isolated" : "", "data-host": host.id },
      h("td", {}, h("a", { href: formatRoute("host", host.id) }, f.hostname)),
      h("td", {}, f.mode), h("td", {}, f.connection), h("td", {}, f.isolation), h("td", {}, f.sync),
      h("td", { class: "number" }, f.lostEvents), h("td", { class: "number" }, f.guardRestores));
  });
  const pages = Math.max(1, Math.ceil(hosts.length / PAGE));
  const pager = h("p", { class: "pager" },
    page > 0 ? h("a", { href: formatRoute("fleet", null, { selector, sort, order, page: page - 1 }) }, "‹ previous") : "",
    ` page ${page + 1} of ${pages} · ${hosts.length} hosts `,
    page + 1 < pages ? h("a", { href: formatRoute("fleet", null, { selector, sort, order, page: page + 1 }) }, "next ›") : "");
  replace(view, h("h1", {}, "Fleet"), form,
    h("p", {}, h("a", { href: formatRoute("map", null, { selector }) }, "Map of these hosts")),
    h("table", { id: "hosts" }, h("thead", {}, header), h("tbody", {}, rows)), pager);
}
