// The dependency map: the server sends nodes with their positions and edges with their state;
// this draws them as SVG, with a legend, pan and zoom, a click on an edge for its flows, and
// SVG export. The view (host or selector, window, grouping, expanded groups) is in the URL.
import * as api from "/console/api.js";
import { h, s, replace } from "/console/dom.js";
import { bounds, edgePath, edgeStyle, edgeWidth, EDGE_STYLES, formatRoute, layerTransform, pointAt, shape, zoomAbout } from "/console/logic.js";

const FLOWS_PAGE = 50;

function query(params) {
  const q = new URLSearchParams();
  for (const key of ["host", "selector", "window", "group", "expand"]) if (params[key]) q.set(key, params[key]);
  return q.toString();
}

function legend() {
  return h("ul", { id: "legend", class: "legend" }, Object.entries(EDGE_STYLES).map(([state, style]) =>
    h("li", {}, s("svg", { width: 44, height: 12, "aria-hidden": "true" },
      s("line", { x1: 2, y1: 6, x2: 42, y2: 6, stroke: style.color, "stroke-width": 3, "stroke-dasharray": style.dash })),
      ` ${state}: ${style.label}`)));
}

async function showFlows(panel, params, edge, offset = 0) {
  replace(panel, h("p", {}, "Loading flows…"));
  const page = await api.get(`/api/v1/map/flows?${query(params)}&edge=${encodeURIComponent(edge.id)}&limit=${FLOWS_PAGE}&offset=${offset}`);
  const rows = page.items.map((item) => h("tr", {},
    h("td", {}, h("a", { href: formatRoute("host", item.host_id) }, item.hostname)),
    h("td", {}, item.flow.direction), h("td", {}, item.flow.remote_address), h("td", {}, String(item.flow.remote_port ?? item.flow.local_port ?? "")),
    h("td", {}, (item.flow.remote_names ?? []).join(", ")), h("td", {}, item.flow.verdict),
    h("td", { class: "number" }, String(item.flow.connections)), h("td", {}, item.flow.last_seen)));
  const more = [];
  if (offset > 0) more.push(h("button", { type: "button", onclick: () => showFlows(panel, params, edge, Math.max(0, offset - FLOWS_PAGE)) }, "‹ previous"));
  if (offset + FLOWS_PAGE < page.total) more.push(h("button", { type: "button", onclick: () => showFlows(panel, params, edge, offset + FLOWS_PAGE) }, "next ›"));
  replace(panel, h("h2", {}, `${edge.service}: ${edge.state}, ${page.total} flows`),
    h("p", { class: "muted" }, `${edge.from} → ${edge.to}`),
    h("table", { id: "edge-flows" }, h("thead", {}, h("tr", {}, ["Host", "Direction", "Remote", "Port", "Names", "Verdict", "Connections", "Last seen"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows)), h("p", {}, `${offset + 1}–${offset + page.items.length} of ${page.total} `, more));
}

const TABLE_PAGE = 100;

/** The edge table: every edge of the view, none folded, busiest first, a page at a time. */
async function showTable(target, panel, params, offset = 0) {
  replace(target, h("p", {}, "Loading edges…"));
  const page = await api.get(`/api/v1/map/edges?${query(params)}&limit=${TABLE_PAGE}&offset=${offset}`);
  const rows = page.items.map((edge) => {
    const service = h("a", { href: "#", "data-edge": edge.id }, edge.service);
    service.addEventListener("click", (event) => {
      event.preventDefault();
      showFlows(panel, params, edge).catch((failure) => replace(panel, h("p", { class: "error" }, failure.message)));
    });
    return h("tr", { "data-state": edge.state }, h("td", {}, edge.from_label ?? edge.from), h("td", {}, edge.to_label ?? edge.to), h("td", {}, service),
      h("td", {}, edge.state), h("td", { class: "number" }, String(edge.connections)), h("td", { class: "number" }, String(edge.flows)));
  });
  const more = [];
  if (offset > 0) more.push(h("button", { type: "button", onclick: () => showTable(target, panel, params, Math.max(0, offset - TABLE_PAGE)) }, "‹ previous"));
  if (offset + TABLE_PAGE < page.total) more.push(h("button", { type: "button", onclick: () => showTable(target, panel, params, offset + TABLE_PAGE) }, "next ›"));
  replace(target, h("table", { id: "edge-table-rows" },
    h("thead", {}, h("tr", {}, ["From", "To", "Service", "State", "Connections", "Flows"].map((c) => h("th", {}, c)))), h("tbody", {}, rows)),
  h("p", {}, `${Math.min(offset + 1, page.total)}–${offset + page.items.length} of ${page.total} edges `, more));
}

function exportSVG(svg) {
  const copy = svg.cloneNode(true);
  copy.setAttribute("xmlns", "http://www.w3.org/2000/svg");
  const blob = new Blob([new XMLSerializer().serializeToString(copy)], { type: "image/svg+xml" });
  const link = document.createElement("a");
  link.download = "cordon-map.svg";
  link.href = URL.createObjectURL(blob);
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

/**
 * Drag to pan, wheel to zoom about the pointer. While the hand moves, the drawn picture is moved
 * and scaled as one layer (a CSS transform: 1,500 edges are not painted again each frame); once
 * it rests for 200 ms, the view box takes the change and the picture is drawn sharp again.
 */
function panAndZoom(svg, box) {
  const frame = svg.parentElement;
  let drawn = { ...box }, view = { ...box }, drag = null, timer = null;
  const size = () => ({ width: frame.clientWidth, height: frame.clientHeight });
  const commit = () => {
    drawn = { ...view };
    svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.width} ${view.height}`);
    svg.style.transform = "";
  };
  const apply = () => {
    const { width, height } = size();
    const t = layerTransform(drawn, view, width, height);
    svg.style.transform = `translate(${t.x}px, ${t.y}px) scale(${t.k})`;
    clearTimeout(timer);
    timer = setTimeout(commit, 200);
  };
  const point = (event) => {
    const rect = frame.getBoundingClientRect(), { width, height } = size();
    return pointAt(view, width, height, event.clientX - rect.left, event.clientY - rect.top);
  };
  frame.addEventListener("wheel", (event) => {
    event.preventDefault();
    const p = point(event);
    view = zoomAbout(view, event.deltaY < 0 ? 1.15 : 1 / 1.15, p.x, p.y);
    apply();
  }, { passive: false });
  svg.addEventListener("pointerdown", (event) => { if (event.target === svg || event.target.classList.contains("backdrop")) drag = { p: point(event), view: { ...view } }; });
  frame.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const rect = frame.getBoundingClientRect(), { width, height } = size();
    const p = pointAt(drag.view, width, height, event.clientX - rect.left, event.clientY - rect.top);
    view = { ...drag.view, x: drag.view.x - (p.x - drag.p.x), y: drag.view.y - (p.y - drag.p.y) };
    apply();
  });
  window.addEventListener("pointerup", () => { drag = null; });
  commit();
  return { zoom: (factor) => { view = zoomAbout(view, factor, view.x + view.width / 2, view.y + view.height / 2); apply(); } };
}

export async function mapPage(view, route, { stale }) {
  const params = { window: "7d", ...route.params };
  const map = await api.get("/api/v1/map?" + query(params));
  if (stale()) return;
  const expanded = new Set((params.expand ?? "").split(",").filter(Boolean));
  const go = (changes) => { location.hash = formatRoute("map", null, { ...params, ...changes }); };
  const nodes = new Map(map.nodes.map((n) => [n.id, n]));
  const busiest = Math.max(1, ...map.edges.map((e) => e.connections));
  const rows = h("div", { id: "edge-rows" });
  const panel = h("section", { id: "edge-panel" }, h("p", { class: "muted" }, "Click an edge to list its flows."));
  const seen = new Map();
  const edges = map.edges.map((edge) => {
    const pair = [edge.from, edge.to].sort().join(" ");
    const index = seen.get(pair) ?? 0;
    seen.set(pair, index + 1);
    const style = edgeStyle(edge.state);
    const path = s("path", { d: edgePath(nodes.get(edge.from), nodes.get(edge.to), index), class: "edge " + edge.state, stroke: style.color,
      "stroke-width": edgeWidth(edge.connections, busiest), "stroke-dasharray": style.dash, fill: "none", "data-edge": edge.id, "data-state": edge.state,
      "marker-end": `url(#arrow-${edge.state})` }, s("title", {}, `${edge.service} ${edge.state}: ${edge.connections} connections, ${edge.flows} flows`));
    path.addEventListener("click", () => showFlows(panel, params, edge).catch((failure) => replace(panel, h("p", { class: "error" }, failure.message))));
    return path;
  });
  const drawn = map.nodes.map((node) => {
    const form = shape(node), fleet = !form.radius;
    const drawn = fleet ? s("rect", { x: node.x - form.half[0], y: node.y - form.half[1], width: 2 * form.half[0], height: 2 * form.half[1], rx: 6 })
                        : s("circle", { cx: node.x, cy: node.y, r: form.radius });
    const g = s("g", { class: "node " + node.kind, "data-node": node.id }, drawn,
      s("text", { x: node.x, y: fleet ? node.y + 4 : node.y + 34, "text-anchor": "middle" }, node.label.length > 28 ? node.label.slice(0, 27) + "…" : node.label),
      s("title", {}, `${node.label}${node.hosts ? ` (${node.hosts} hosts)` : ""}: ${node.connections} connections${node.members.length ? "\n" + node.members.join("\n") : ""}`));
    if (node.kind === "group") g.addEventListener("click", () => go({ expand: [...expanded, node.id].join(",") }));
    return g;
  });
  const markers = s("defs", {}, Object.entries(EDGE_STYLES).map(([state, style]) =>
    s("marker", { id: `arrow-${state}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 14, markerHeight: 14, markerUnits: "userSpaceOnUse",
      orient: "auto" },
      s("path", { d: "M0,0 L10,5 L0,10 z", fill: style.color }))));
  const box = bounds(map.nodes);
  const svg = s("svg", { id: "map", role: "img", "aria-label": "dependency map", preserveAspectRatio: "xMidYMid meet" },
    markers, s("rect", { class: "backdrop", x: box.x - 5000, y: box.y - 5000, width: box.width + 10000, height: box.height + 10000, fill: "transparent" }),
    s("g", { class: "edges" }, edges), s("g", { class: "nodes" }, drawn));
  const controls = h("form", { id: "map-controls", onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    go({ selector: data.get("selector"), window: data.get("window"), group: data.get("group"), expand: "" });
  } },
  params.host ? h("span", {}, "One host (", h("a", { href: formatRoute("host", params.host) }, "its page"), "). ") :
    [h("label", {}, "Selector ", h("input", { name: "selector", value: params.selector ?? "", size: 24 })), " ",
     h("label", {}, "Group by tag ", h("input", { name: "group", value: params.group ?? map.group_by ?? "", size: 10 })), " "],
  h("label", {}, "Window ", h("select", { name: "window" }, ["1h", "24h", "7d", "30d"].map((w) => h("option", { value: w, selected: w === map.window }, w)))),
  " ", h("button", { type: "submit" }, "Show"));
  const tools = h("p", { class: "tools" },
    h("button", { type: "button", id: "zoom-in" }, "+"), h("button", { type: "button", id: "zoom-out" }, "−"), " ",
    h("button", { type: "button", id: "export-svg", onclick: () => exportSVG(svg) }, "Export SVG"), " ",
    expanded.size ? h("button", { type: "button", onclick: () => go({ expand: "" }) }, "Collapse groups") : "",
    ` ${map.hosts} hosts, ${map.nodes.length} nodes, ${map.edges.length} edges since ${map.since}`,
    map.hidden_edges ? h("strong", {}, ` · ${map.hidden_edges} quieter edges (${map.hidden_connections} connections) not drawn: see the table view`) : "");
  const table = h("details", { id: "edge-table", ontoggle: (event) => { if (event.target.open) showTable(rows, panel, params); } },
    h("summary", {}, map.hidden_edges ? `Table view: every edge, the ${map.hidden_edges} not drawn too` : "Table view: every edge"), rows);
  replace(view, h("h1", {}, "Dependency map"), controls, legend(), tools, h("div", { class: "map-frame" }, svg), panel, table);
  const zoom = panAndZoom(svg, box);
  document.getElementById("zoom-in").addEventListener("click", () => zoom.zoom(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => zoom.zoom(0.8));
}
