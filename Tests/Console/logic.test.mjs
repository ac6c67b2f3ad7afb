// The console's pure logic (Sources/CordonServer/Console/logic.js), run by `node --test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { atLeast, border, bounds, edgePath, edgeStyle, edgeWidth, EDGE_STYLES, formatRoute, hostFacts, parseRoute, zoomAbout }
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
