// A host: what it is and runs, its isolation (with the actions its role allows), its flows,
// its decision log as the server verified it, and the intents sent to it.
import * as api from "/console/api.js";
import { h, replace, table } from "/console/dom.js";
import { atLeast, formatRoute, hostFacts } from "/console/logic.js";

/** Isolate or release, in two steps: a reason, then a confirmation naming the host. */
function isolationForm(host, refresh) {
  const isolated = host.isolation?.desired === "isolated";
  const target = isolated ? "released" : "isolated";
  const verb = isolated ? "Release" : "Isolate";
  const reason = h("input", { id: "reason", placeholder: "why (kept in the audit log)", size: 40, maxlength: 1000 });
  const message = h("p", { id: "isolation-message" });
  const confirm = h("button", { id: "confirm-isolation", type: "button", hidden: true, class: "danger" }, `Confirm: ${verb.toLowerCase()} ${host.hostname}`);
  const start = h("button", { id: "isolate", type: "button" }, verb + "…");
  start.addEventListener("click", () => {
    if (!reason.value.trim()) { replace(message, h("span", { class: "error" }, "A reason is required.")); return; }
    confirm.hidden = false;
    start.disabled = true;
    // Mid-confirmation: a live update must not redraw the form away.
    confirm.dataset.busy = "1";
  });
  confirm.addEventListener("click", async () => {
    confirm.disabled = true;
    try {
      const answer = await api.post(`/api/v1/hosts/${host.id}/isolation`, { state: target, reason: reason.value.trim() });
      replace(message, `Requested (intent ${answer.intent_id ?? answer.id ?? ""}); the agent applies it within its poll.`);
      setTimeout(refresh, 1000);
    } catch (failure) { replace(message, h("span", { class: "error" }, failure.message)); confirm.disabled = false; }
  });
  return h("section", { id: "isolation" }, h("h2", {}, "Isolation"), h("label", { for: "reason" }, "Reason "), reason, " ", start, " ", confirm, message);
}

export async function hostPage(view, route, { stale }) {
  const id = route.id;
  const [host, flows, log, intents] = await Promise.all([
    api.get(`/api/v1/hosts/${encodeURIComponent(id)}`),
    api.get(`/api/v1/hosts/${encodeURIComponent(id)}/flows`),
    api.get(`/api/v1/hosts/${encodeURIComponent(id)}/log`).catch(() => null),
    api.get(`/api/v1/intents?host_id=${encodeURIComponent(id)}&limit=20`),
  ]);
  if (stale()) return;
  const f = hostFacts(host);
  const session = api.current();
  const refresh = () => { if (!stale()) hostPage(view, route, { stale }); };
  const policy = host.policy ?? {};
  const facts = h("dl", { id: "facts" },
    [["Mode", f.mode], ["Connection", f.connection], ["Isolation", f.isolation], ["Policy sync", f.sync],
     ["Ruleset in force", host.ruleset ? `${host.ruleset.name ?? ""} v${host.ruleset.version ?? ""}` : "none"],
     ["Tags", Object.entries(host.tags ?? {}).map(([k, v]) => `${k}=${v}`).join(", ") || "none"],
     ["Addresses", (host.addresses ?? []).join(", ")], ["Agent", host.agent_version],
     ["Lost events", f.lostEvents], ["Guard restores", f.guardRestores]].map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v ?? ""))]));
  const assigned = policy.assigned;
  const sources = assigned ? h("section", { id: "policy" }, h("h2", {}, "Effective policy"),
    h("p", {}, `Sync: ${policy.sync}${policy.error ? " — " + policy.error : ""}`),
    table("policy-sources", ["Rule", "From ruleset", "Version", "Assignment"],
      assigned.sources.map((s) => [s.rule, s.ruleset, String(s.version), s.assignment])))
    : h("section", { id: "policy" }, h("h2", {}, "Effective policy"), h("p", {}, "No ruleset is assigned to this host."));
  const red = flows.filter((flow) => flow.verdict === "rejected");
  const flowRow = (flow) => [flow.direction, flow.protocol + (flow.remote_port ? "/" + flow.remote_port : flow.local_port ? "/" + flow.local_port : ""),
    flow.remote_address, (flow.remote_names ?? []).join(", "), flow.verdict, String(flow.connections), flow.last_seen];
  const verification = log?.verification;
  replace(view,
    h("h1", {}, host.hostname, f.isolated ? h("span", { class: "badge isolated" }, "isolated") : ""),
    h("p", {}, h("a", { href: formatRoute("map", null, { host: host.id }) }, "Dependency map of this host")),
    facts,
    atLeast(session.role, "responder") ? isolationForm(host, refresh) : "",
    sources,
    h("h2", {}, `Rejected flows (${red.length})`),
    table("rejected-flows", ["Direction", "Service", "Remote", "Names", "Verdict", "Connections", "Last seen"], red.slice(0, 200).map(flowRow)),
    h("h2", {}, `Flows (${flows.length})`),
    table("flows", ["Direction", "Service", "Remote", "Names", "Verdict", "Connections", "Last seen"], flows.slice(0, 500).map(flowRow)),
    h("h2", {}, "Decision log"),
    h("p", { id: "log-verification", class: verification?.intact ? "ok" : "error" },
      verification ? (verification.intact ? `Verified by the server: ${verification.entries} entries, chain intact.`
                                          : `The chain does not verify: ${verification.problems.join("; ")}`) : "No log shipped yet."),
    table("log", ["#", "Action", "Outcome", "Operator", "Reason", "At"],
      (log?.entries ?? []).slice(-50).reverse().map((d) => [String(d.sequence), d.action, d.outcome, d.operator, d.reason ?? "", d.applied_at])),
    h("h2", {}, "Intents"),
    table("intents", ["Requested", "By", "State", "Status", "Reason"],
      intents.items.map((i) => [i.requested_at, i.requested_by, i.state, i.status, i.reason ?? ""])));
}
