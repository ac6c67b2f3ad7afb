// The fleet: every host, filtered by a selector with a live count, sorted and paged by the
// server (a page is 50 rows read, whatever the fleet's size).
import * as api from "/console/api.js";
import { h, replace } from "/console/dom.js";
import { formatRoute, hostFacts } from "/console/logic.js";

const PAGE = 50;
// [sort key (null: not sortable, the server works it out per host), title].
const COLUMNS = [
  ["hostname", "Host"], ["mode", "Mode"], ["connection", "Connection"], ["isolation", "Isolation"],
  [null, "Policy sync"], ["lost_events", "Lost events"], ["guard_restores", "Guard restores"],
];

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

  const query = new URLSearchParams({ limit: PAGE, offset: page * PAGE, sort, order });
  if (selector) query.set("selector", selector);
  const answer = await api.get("/api/v1/hosts?" + query);
  if (stale()) return;
  const shown = answer.items, total = answer.total ?? shown.length;
  const header = h("tr", {}, COLUMNS.map(([key, title]) => {
    if (!key) return h("th", {}, title);
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
  const pages = Math.max(1, Math.ceil(total / PAGE));
  const pager = h("p", { class: "pager" },
    page > 0 ? h("a", { href: formatRoute("fleet", null, { selector, sort, order, page: page - 1 }) }, "‹ previous") : "",
    ` page ${page + 1} of ${pages} · ${total} hosts `,
    page + 1 < pages ? h("a", { href: formatRoute("fleet", null, { selector, sort, order, page: page + 1 }) }, "next ›") : "");
  replace(view, h("h1", {}, "Fleet"), form,
    h("p", {}, h("a", { href: formatRoute("map", null, { selector }) }, "Map of these hosts")),
    h("table", { id: "hosts" }, h("thead", {}, header), h("tbody", {}, rows)), pager);
}
