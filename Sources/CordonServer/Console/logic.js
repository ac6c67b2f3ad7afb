// The console's pure logic: routes in the URL, roles, the map's edge styles, sorting. No DOM
// here, so `node --test` checks it (Tests/Console).

export const ROLES = ["viewer", "responder", "approver", "admin"];

/** The held role is at least the needed one (as the server's `require`). */
export function atLeast(held, needed) {
  const a = ROLES.indexOf(held), b = ROLES.indexOf(needed);
  return a >= 0 && b >= 0 && a >= b;
}

/** `#/host/ID?window=7d` → {page: "host", id: "ID", params: {window: "7d"}}. */
export function parseRoute(hash) {
  const text = (hash ?? "").replace(/^#\/?/, "");
  const [path, query = ""] = text.split("?", 2);
  const [page = "", id = null] = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = {};
  for (const [key, value] of new URLSearchParams(query)) params[key] = value;
  return { page: page || "fleet", id, params };
}

/** The inverse of parseRoute; empty parameters are left out and the rest sorted, so one view has one URL. */
export function formatRoute(page, id, params = {}) {
  const query = new URLSearchParams();
  for (const key of Object.keys(params).sort()) {
    const value = params[key];
    if (value === undefined || value === null || value === "" || (Array.isArray(value) && value.length === 0)) continue;
    query.set(key, Array.isArray(value) ? [...value].sort().join(",") : String(value));
  }
  const tail = query.toString();
  return "#/" + page + (id ? "/" + encodeURIComponent(id) : "") + (tail ? "?" + tail : "");
}

/**
 * Edge styles: the Okabe–Ito palette (distinguishable with the common colour-vision
 * deficiencies) and a dash pattern for each state, so that colour is never the only cue.
 */
export const EDGE_STYLES = {
  discovered: { color: "#6b6b6b", dash: "6 4", label: "no rule yet (the host enforces nothing)" },
  allowed: { color: "#009E73", dash: "", label: "a rule in force allows it" },
  pending: { color: "#E69F00", dash: "12 3 2 3", label: "the assigned policy, not yet in force, would reject it" },
  rejected: { color: "#D55E00", dash: "", label: "refused by the policy in force" },
};

export function edgeStyle(state) {
  return EDGE_STYLES[state] ?? EDGE_STYLES.discovered;
}

/** Stroke width by connections, on a log scale from 1.5 to 9 px against the busiest edge. */
export function edgeWidth(connections, busiest) {
  if (!(busiest > 1) || !(connections > 0)) return 1.5;
  const share = Math.log1p(connections) / Math.log1p(busiest);
  return Math.round((1.5 + 7.5 * Math.min(1, share)) * 10) / 10;
}

/** What the fleet table shows of a host, as text. */
export function hostFacts(host) {
  const isolation = host.isolation ?? {};
  const observed = isolation.observed ?? "unknown";
  const isolated = observed === "isolated" || isolation.desired === "isolated";
  return {
    hostname: host.hostname,
    mode: host.mode ?? "not reported",
    connection: host.connected ? "connected" : host.last_seen ? "last seen " + host.last_seen : "never seen",
    isolation: isolation.desired === observed ? observed : `${observed} → ${isolation.desired}`,
    isolated,
    sync: host.policy?.sync ?? "unknown",
    lostEvents: host.lost_events ?? 0,
    guardRestores: host.guard_restores ?? 0,
  };
}

/** How a node is drawn: fleet nodes as 92×36 boxes, networks as circles of radius 20. */
export function shape(node) {
  return node.kind === "group" || node.kind === "host" || node.id === "other:groups" ? { half: [46, 18] } : { radius: 20 };
}

/** Where the line from `node`'s centre toward `toward` leaves its shape, `gap` further on. */
export function border(node, toward, gap = 3) {
  const dx = toward.x - node.x, dy = toward.y - node.y, length = Math.hypot(dx, dy);
  if (length === 0) return { x: node.x, y: node.y };
  const s = shape(node);
  const reach = s.radius ?? Math.min(dx === 0 ? Infinity : s.half[0] / Math.abs(dx / length), dy === 0 ? Infinity : s.half[1] / Math.abs(dy / length));
  const t = Math.min(reach + gap, length / 2);
  return { x: node.x + (dx / length) * t, y: node.y + (dy / length) * t };
}

const round = (v) => Math.round(v * 10) / 10;

/**
 * The path of an edge from border to border (so its arrow ends at the target's edge): a straight
 * line, or for the n-th of several edges between the same two nodes a curve bowed to
 * alternating sides, so parallel services stay apart.
 */
export function edgePath(a, b, index = 0) {
  const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
  const dx = b.x - a.x, dy = b.y - a.y, length = Math.hypot(dx, dy) || 1;
  const bow = index === 0 ? 0 : 18 * Math.ceil(index / 2) * (index % 2 ? 1 : -1);
  const control = { x: mx - (dy / length) * bow, y: my + (dx / length) * bow };
  const start = border(a, control), end = border(b, control);
  if (index === 0) return `M${round(start.x)},${round(start.y)} L${round(end.x)},${round(end.y)}`;
  return `M${round(start.x)},${round(start.y)} Q${round(control.x)},${round(control.y)} ${round(end.x)},${round(end.y)}`;
}

/** The view box that holds every node with a margin. */
export function bounds(nodes, margin = 80) {
  if (nodes.length === 0) return { x: -200, y: -200, width: 400, height: 400 };
  const xs = nodes.map((n) => n.x), ys = nodes.map((n) => n.y);
  const x = Math.min(...xs) - margin, y = Math.min(...ys) - margin;
  return { x, y, width: Math.max(...xs) + margin - x, height: Math.max(...ys) + margin - y };
}

/** Zooming by `factor` about a point keeps that point where it is on the screen. */
export function zoomAbout(box, factor, px, py) {
  const width = box.width / factor, height = box.height / factor;
  return { x: px - (px - box.x) / factor, y: py - (py - box.y) / factor, width, height };
}

/** How a view box fits a `width`×`height` element centred and whole (preserveAspectRatio meet): scale and offsets. */
export function viewport(view, width, height) {
  const scale = Math.min(width / view.width, height / view.height);
  return { scale, x: (width - view.width * scale) / 2, y: (height - view.height * scale) / 2 };
}

/** The point of the picture under an element's pixel (px, py) when it shows `view`. */
export function pointAt(view, width, height, px, py) {
  const v = viewport(view, width, height);
  return { x: view.x + (px - v.x) / v.scale, y: view.y + (py - v.y) / v.scale };
}

/**
 * The CSS transform (origin top left) that moves a picture drawn for view box `drawn` to where
 * view box `view` would draw it: panning and zooming move one layer, and nothing is painted
 * again until the view rests.
 */
export function layerTransform(drawn, view, width, height) {
  const d = viewport(drawn, width, height), v = viewport(view, width, height);
  const k = v.scale / d.scale;
  return { k, x: v.x - k * d.x + (drawn.x - view.x) * v.scale, y: v.y - k * d.y + (drawn.y - view.y) * v.scale };
}

/** A rollout's waves with their hosts counted by state: what each wave's progress bar shows. */
export function waveProgress(rollout) {
  return (rollout.waves ?? []).map((wave) => {
    const hosts = (rollout.hosts ?? []).filter((x) => x.wave === wave.number);
    const count = (...states) => hosts.filter((x) => states.includes(x.state)).length;
    return { number: wave.number, size: wave.size, state: wave.state, hosts: hosts.length,
      done: count("confirmed", "skipped"), failed: count("failed", "reverted"), applying: count("applying"), waiting: count("waiting") };
  });
}

/** The start form's fields as the API's request body; a bad number throws naming the API's field. */
export function rolloutRequest(fields) {
  const body = { selector: (fields.selector ?? "").trim(), mode: fields.mode || "enforce" };
  const waves = (fields.waves ?? "").split(",").map((w) => w.trim()).filter(Boolean);
  if (waves.length) body.waves = waves;
  for (const [name, key] of [["soak", "soak_seconds"], ["confirm", "confirm_window_seconds"], ["failures", "max_failures"]]) {
    const text = (fields[name] ?? "").trim();
    if (!text) continue;
    if (!/^\d{1,9}$/.test(text)) throw Object.assign(new Error("expected a whole number of 0 or more"), { field: key });
    body[key] = Number(text);
  }
  return body;
}
