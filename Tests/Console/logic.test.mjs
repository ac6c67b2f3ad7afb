// The console's pure logic (Sources/CordonServer/Console/logic.js), run by `node --test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { atLeast, border, bounds, edgePath, edgeStyle, edgeWidth, EDGE_STYLES, formatRoute, hostFacts, layerTransform, parseRoute, pointAt, rolloutRequest, viewport, waveProgress, zoomAbout }
  from "../../Sources/CordonServer/Console/logic.js";

test("roles compare as the server's do", () => {
  assert.equal(atLeast("admin", "responder"), true);
  assert.equal(atLeast("responder", "responder"), true);
  assert.equal(atLeast("viewer", "responder"), false);
  assert.equal(atLeast("approver", "admin"), false);
  assert.equal(atLeast("root", "viewer"), false, "an unknown role is no role");
  assert.equal(atLeast("viewer", "superuser"), false);
});

test("a view's URL parses back to the same view, one URL per view", () => {
  const hash = formatRoute("map", null, { window: "7d", selector: 'env in {"prod", "staging"}', expand: ["group:tier=db", "group:tier=app"], group: "" });
  assert.equal(hash, "#/map?expand=group%3Atier%3Dapp%2Cgroup%3Atier%3Ddb&selector=env+in+%7B%22prod%22%2C+%22staging%22%7D&window=7d");
  assert.deepEqual(parseRoute(hash), { page: "map", id: null,
    params: { expand: "group:tier=app,group:tier=db", selector: 'env in {"prod", "staging"}', window: "7d" } });
  assert.equal(formatRoute("map", null, { b: "2", a: "1" }), formatRoute("map", null, { a: "1", b: "2" }));
  const id = "3f1c…/<img>";
  assert.equal(parseRoute(formatRoute("host", id)).id, id);
  assert.deepEqual(parseRoute(""), { page: "fleet", id: null, params: {} });
  assert.deepEqual(parseRoute("#/rollouts/abc"), { page: "rollouts", id: "abc", params: {} });
});

test("every edge state has a distinct colour and a distinct dash pattern", () => {
  const states = ["discovered", "allowed", "pending", "rejected"];
  assert.deepEqual(Object.keys(EDGE_STYLES), states);
  assert.equal(new Set(states.map((s) => edgeStyle(s).color)).size, 4);
  // Colour is never the only cue: allowed and rejected differ by colour, and both from
  // discovered and pending by dash pattern.
  assert.equal(new Set(states.map((s) => edgeStyle(s).dash)).size, 3);
  assert.notEqual(edgeStyle("discovered").dash, "");
  assert.deepEqual(edgeStyle("nonsense"), EDGE_STYLES.discovered);
});

test("edge width grows with connections, bounded", () => {
  assert.equal(edgeWidth(0, 100), 1.5);
  assert.equal(edgeWidth(100, 100), 9);
  assert.ok(edgeWidth(10, 100) > edgeWidth(2, 100));
  assert.ok(edgeWidth(1e9, 100) <= 9);
  assert.equal(edgeWidth(5, 0), 1.5);
});

test("a host's facts say what is pending", () => {
  const facts = hostFacts({ hostname: "<b>x</b>", connected: false, isolation: { desired: "isolated", observed: "released" }, policy: { sync: "pending" } });
  assert.equal(facts.hostname, "<b>x</b>");
  assert.equal(facts.isolation, "released → isolated");
  assert.equal(facts.isolated, true);
  assert.equal(facts.connection, "never seen");
  assert.equal(facts.mode, "not reported");
});

test("edges run from border to border; parallel edges bow apart; zoom keeps the point under the pointer", () => {
  const a = { id: "net:a", kind: "network", x: 0, y: 0 }, b = { id: "net:b", kind: "network", x: 100, y: 0 };
  assert.equal(edgePath(a, b), "M23,0 L77,0", "circles of radius 20, 3 px clear");
  const group = { id: "group:x", kind: "group", x: 0, y: 0 };
  assert.deepEqual(border(group, { x: 0, y: 100 }), { x: 0, y: 21 }, "a box's top and bottom are 18 px from its centre");
  assert.deepEqual(border(group, { x: -100, y: 0 }), { x: -49, y: 0 }, "its sides 46 px");
  assert.deepEqual(border(a, { x: 10, y: 0 }), { x: 5, y: 0 }, "never past halfway to a close neighbour");
  assert.notEqual(edgePath(a, b, 1), edgePath(a, b, 2));
  assert.match(edgePath(a, b, 1), /^M[-\d.]+,[-\d.]+ Q50,18 /);
  const box = { x: 0, y: 0, width: 200, height: 100 };
  const zoomed = zoomAbout(box, 2, 50, 50);
  assert.deepEqual(zoomed, { x: 25, y: 25, width: 100, height: 50 });
  // The point keeps its fraction of the box.
  assert.equal((50 - zoomed.x) / zoomed.width, (50 - box.x) / box.width);
  assert.deepEqual(bounds([{ x: -10, y: 5 }, { x: 30, y: 25 }], 10), { x: -20, y: -5, width: 60, height: 40 });
});

test("a panned and zoomed layer puts every point where the new view box would draw it", () => {
  const drawn = { x: -100, y: -50, width: 800, height: 400 }, size = [640, 480];
  const screen = (view, u) => { const v = viewport(view, ...size); return { x: v.x + (u.x - view.x) * v.scale, y: v.y + (u.y - view.y) * v.scale }; };
  for (const view of [zoomAbout(drawn, 1.15, 30, 70), zoomAbout(zoomAbout(drawn, 1 / 1.15, 500, -20), 3, 0, 0), { ...drawn, x: 40, y: -90 }]) {
    const t = layerTransform(drawn, view, ...size);
    for (const u of [{ x: 0, y: 0 }, { x: 700, y: 350 }, { x: -100, y: 20 }]) {
      const before = screen(drawn, u), after = screen(view, u);
      assert.ok(Math.abs(t.k * before.x + t.x - after.x) < 1e-9 && Math.abs(t.k * before.y + t.y - after.y) < 1e-9, JSON.stringify({ view, u }));
      const back = pointAt(view, ...size, after.x, after.y);
      assert.ok(Math.abs(back.x - u.x) < 1e-9 && Math.abs(back.y - u.y) < 1e-9);
    }
  }
  assert.deepEqual(layerTransform(drawn, drawn, ...size), { k: 1, x: 0, y: 0 });
});

test("a rollout's waves count their hosts by state", () => {
  const rollout = {
    waves: [{ number: 1, size: "1", state: "done" }, { number: 2, size: "100%", state: "running" }],
    hosts: [{ wave: 1, state: "confirmed" }, { wave: 2, state: "skipped" }, { wave: 2, state: "applying" }, { wave: 2, state: "failed" },
      { wave: 2, state: "reverted" }, { wave: 2, state: "waiting" }],
  };
  assert.deepEqual(waveProgress(rollout), [
    { number: 1, size: "1", state: "done", hosts: 1, done: 1, failed: 0, applying: 0, waiting: 0 },
    { number: 2, size: "100%", state: "running", hosts: 5, done: 1, failed: 2, applying: 1, waiting: 1 },
  ]);
  assert.deepEqual(waveProgress({}), []);
});

test("the start form becomes the API's request, a bad number naming the API's field", () => {
  assert.deepEqual(rolloutRequest({ selector: ' tier == "web" ', mode: "discovery", waves: "1, 10% ,100%,", soak: "0", confirm: "", failures: "2" }),
    { selector: 'tier == "web"', mode: "discovery", waves: ["1", "10%", "100%"], soak_seconds: 0, max_failures: 2 });
  assert.deepEqual(rolloutRequest({ selector: "all()" }), { selector: "all()", mode: "enforce" });
  assert.throws(() => rolloutRequest({ selector: "all()", confirm: "-5" }), (e) => e.field === "confirm_window_seconds");
  assert.throws(() => rolloutRequest({ selector: "all()", soak: "1e3" }), (e) => e.field === "soak_seconds");
});
