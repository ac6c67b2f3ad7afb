// Rulesets, rollouts and the audit log. Buttons appear only for a role that may press them;
// the server checks the role again whatever the page shows.
import * as api from "/console/api.js";
import { h, replace, table } from "/console/dom.js";
import { atLeast, formatRoute, rolloutRequest, waveProgress } from "/console/logic.js";

export async function rulesetsPage(view, route, { stale }) {
  const [rulesets, assignments] = await Promise.all([api.get("/api/v1/rulesets"), api.get("/api/v1/assignments")]);
  if (stale()) return;
  const approver = atLeast(api.current().role, "approver");
  const result = h("section", { id: "review-result" });
  const content = h("textarea", { id: "ruleset-content", rows: 12, cols: 80, placeholder: "a ruleset (YAML)" });
  const selector = h("input", { id: "review-selector", size: 30, placeholder: 'tier == "web"' });
  const name = h("input", { id: "ruleset-name", size: 20, placeholder: "name" });
  const review = h("button", { type: "button", id: "review" }, "Review against the selector");
  review.addEventListener("click", async () => {
    replace(result, "Reviewing…");
    try {
      const answer = await api.post("/api/v1/reviews", { content: content.value, selector: selector.value.trim() });
      replace(result, h("h2", {}, "Review"), h("p", {}, `${answer.summary?.hosts ?? answer.hosts?.length ?? 0} hosts`),
        table("review-hosts", ["Host", "Allowed", "Rejected", "Risks"], (answer.hosts ?? []).map((host) =>
          [host.hostname, String(host.allowed ?? ""), String(host.rejected ?? ""), (host.risks ?? []).map((r) => r.message ?? r.kind).join("; ")])));
    } catch (failure) { replace(result, h("p", { class: "error" }, (failure.field ? failure.field + ": " : "") + failure.message)); }
  });
  const approve = approver ? h("button", { type: "button", id: "approve" }, "Approve as a new version") : "";
  if (approver) approve.addEventListener("click", async () => {
    try {
      const version = await api.post(`/api/v1/rulesets/${encodeURIComponent(name.value.trim())}/versions`, { content: content.value, selector: selector.value.trim() });
      replace(result, h("p", {}, `Approved ${version.name} v${version.version}.`));
    } catch (failure) { replace(result, h("p", { class: "error" }, (failure.field ? failure.field + ": " : "") + failure.message)); }
  });
  const assign = approver ? h("form", { id: "assign", onsubmit: async (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    try {
      await api.post("/api/v1/assignments", { ruleset: data.get("ruleset"), version: Number(data.get("version")), selector: data.get("selector") });
      rulesetsPage(view, route, { stale });
    } catch (failure) { replace(result, h("p", { class: "error" }, (failure.field ? failure.field + ": " : "") + failure.message)); }
  } }, h("h2", {}, "Assign"), h("label", {}, "Ruleset ", h("input", { name: "ruleset", size: 16 })), " ",
    h("label", {}, "Version ", h("input", { name: "version", size: 4 })), " ",
    h("label", {}, "Selector ", h("input", { name: "selector", size: 24 })), " ", h("button", { type: "submit" }, "Assign")) : "";
  replace(view, h("h1", {}, "Rulesets"),
    table("rulesets", ["Name", "Latest version", "Approved by", "At"], rulesets.items.map((r) => [r.name, String(r.version ?? r.latest ?? ""), r.approved_by ?? "", r.approved_at ?? ""])),
    h("h2", {}, "Assignments"),
    table("assignments", ["Ruleset", "Version", "Selector", "Hosts"], assignments.items.map((a) => [a.ruleset, String(a.version), a.selector, String(a.hosts ?? a.matches ?? "")])),
    assign,
    h("h2", {}, "Review a ruleset"), h("p", {}, h("label", {}, "Name ", name), " ", h("label", {}, "Selector ", selector)), content,
    h("p", {}, review, " ", approve), result);
}

/** Starting a rollout: the form, then a confirmation that says how many hosts it will change. */
function startForm(message, reload) {
  const confirm = h("p", { id: "rollout-confirm" });
  const form = h("form", { id: "start-rollout", onsubmit: async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(event.target));
    let body;
    try {
      body = rolloutRequest(data);
      const preview = await api.get("/api/v1/selectors/preview?selector=" + encodeURIComponent(body.selector));
      const go = h("button", { type: "button", id: "confirm-rollout" }, `Start: ${body.mode} on ${preview.matches} hosts in waves ${(body.waves ?? ["1", "10%", "100%"]).join(", ")}`);
      go.addEventListener("click", async () => {
        try {
          const rollout = await api.post("/api/v1/rollouts", body);
          replace(confirm, "");
          reload(rollout.id);
        } catch (failure) { replace(confirm, h("span", { class: "error" }, (failure.field ? failure.field + ": " : "") + failure.message)); }
      });
      replace(confirm, go, " ", h("button", { type: "button", onclick: () => replace(confirm, "") }, "Cancel"));
    } catch (failure) { replace(confirm, h("span", { class: "error" }, (failure.field ? failure.field + ": " : "") + failure.message)); }
  } },
  h("h2", {}, "Start a rollout"),
  h("label", {}, "Selector ", h("input", { name: "selector", id: "rollout-selector", size: 24, placeholder: 'tier == "web"' })), " ",
  h("label", {}, "Mode ", h("select", { name: "mode", id: "rollout-mode" }, h("option", { value: "enforce" }, "enforce"), h("option", { value: "discovery" }, "discovery"))), " ",
  h("label", {}, "Waves ", h("input", { name: "waves", id: "rollout-waves", size: 12, placeholder: "1, 10%, 100%" })), " ",
  h("label", {}, "Soak s ", h("input", { name: "soak", size: 5, placeholder: "900" })), " ",
  h("label", {}, "Confirm s ", h("input", { name: "confirm", size: 4, placeholder: "120" })), " ",
  h("label", {}, "Failures ", h("input", { name: "failures", size: 3, placeholder: "0" })), " ",
  h("button", { type: "submit", id: "start-rollout-button" }, "Start…"));
  return [form, confirm];
}

/** Each wave as a bar: hosts done (confirmed or untouched), failed, applying, waiting. */
function waves(rollout) {
  return h("ol", { id: "rollout-waves" }, waveProgress(rollout).map((w) =>
    h("li", { "data-wave": w.number, "data-state": w.state },
      `Wave ${w.number} (${w.size}, ${w.hosts} hosts) ${w.state} `,
      h("progress", { value: w.done, max: Math.max(1, w.hosts) }),
      ` ${w.done} done, ${w.applying} applying, ${w.failed} failed, ${w.waiting} waiting`)));
}

export async function rolloutsPage(view, route, { stale }) {
  const rollouts = await api.get("/api/v1/rollouts");
  if (stale()) return;
  const approver = atLeast(api.current().role, "approver");
  const message = h("p", { id: "rollout-message" });
  const reload = (id) => { if (id && id !== route.id) location.hash = formatRoute("rollouts", id); else rolloutsPage(view, route, { stale }); };
  const control = (rollout, action) => {
    const button = h("button", { type: "button", "data-action": action, "data-rollout": rollout.id }, action);
    button.addEventListener("click", async () => {
      try {
        await api.post(`/api/v1/rollouts/${rollout.id}/${action}`, { reason: `from the console` });
        reload();
      } catch (failure) { replace(message, h("span", { class: "error" }, failure.message)); }
    });
    return button;
  };
  const rows = rollouts.items.map((r) => [
    h("a", { href: formatRoute("rollouts", r.id) }, r.id.slice(0, 8)), r.selector, r.mode, r.state, `wave ${r.current_wave} of ${r.waves?.length ?? "?"}`,
    String(r.failures), r.halt_reason ?? "",
    approver ? [r.state === "running" ? control(r, "halt") : "", r.state === "halted" ? control(r, "resume") : ""] : "",
  ]);
  const detail = route.id ? await api.get(`/api/v1/rollouts/${encodeURIComponent(route.id)}`) : null;
  if (stale()) return;
  replace(view, h("h1", {}, "Rollouts"), message,
    table("rollouts", ["Rollout", "Selector", "Mode", "State", "Progress", "Failures", "Halt reason", ""], rows),
    approver ? startForm(message, reload) : "",
    detail ? [h("h2", { id: "rollout-title" }, `Rollout ${detail.id}: ${detail.state}`), detail.halt_reason ? h("p", { class: "error" }, "Halted: " + detail.halt_reason) : "",
      waves(detail),
      table("rollout-hosts", ["Host", "Wave", "State", "Detail", "Changed"], (detail.hosts ?? []).map((x) =>
        [h("a", { href: formatRoute("host", x.host_id) }, x.hostname), String(x.wave), x.state, x.detail ?? "", x.changed_at]))] : "");
}

export async function auditPage(view, route, { stale }) {
  const audit = await api.get("/api/v1/audit");
  if (stale()) return;
  replace(view, h("h1", {}, "Audit log"),
    table("audit", ["At", "Who", "Role", "Action", "Target", "Detail", "From"], audit.items.map((e) =>
      [e.at, e.actor, e.role ?? "", e.action, e.target ?? "", e.detail, e.remote ?? ""])));
}
