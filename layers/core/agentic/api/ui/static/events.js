"use strict";
// The task page's steps, notices and event log: what each event of the stream does to them
// (applyEvent). Uses app.js's globals ($, el, state, setStatus, setNotice, ...).

function stepRow(stepId, agentType, description) {
  let row = document.querySelector(`#steps li[data-step-id="${CSS.escape(stepId)}"]`);
  if (!state.steps.has(stepId)) {
    state.steps.set(stepId, { agent: agentType || "", state: "pending" });
    $("#retry-from").append(el("option", { value: stepId, text: `${stepId} ${agentType || ""}` }));
  }
  if (!row) {
    row = el(
      "li",
      { className: "step", dataset: { stepId, state: "pending" } },
      el("span", { className: "icon", ariaHidden: "true" }),
      el("strong", { className: "agent", text: agentType || "" }),
      " ",
      el("span", { className: "desc muted", text: description || "" }),
      el("div", { className: "step-state", text: "pending" }),
    );
    $("#steps").append(row);
  }
  return row;
}

function setStep(data, stepState, text) {
  const row = stepRow(data.step_id, data.agent_type, data.description);
  if (data.agent_type) row.querySelector(".agent").textContent = data.agent_type;
  if (data.description) row.querySelector(".desc").textContent = data.description;
  row.dataset.state = stepState;
  row.querySelector(".step-state").textContent = text;
  state.steps.get(data.step_id).state = stepState;
  if (stepState !== "retrying") stopCountdown(data.step_id);
  return row;
}

// A retry's wait, counted down; then the attempt runs (no event says so: the wait is its start).
function retryCountdown(event) {
  const d = event.data || {};
  const before = `attempt ${d.attempt - 1} failed (${d.error})`;
  const delay = Number(d.delay_seconds);
  stopCountdown(d.step_id);
  if (!Number.isFinite(delay)) {
    setStep(d, "retrying", `${before}; attempt ${d.attempt} soon`);
    return;
  }
  const startsAt = Math.min(Date.parse(event.timestamp) || Date.now(), Date.now()) + 1000 * delay;
  const tick = () => {
    const left = (startsAt - Date.now()) / 1000;
    const row = setStep(d, "retrying", left > 0 ? `${before}; attempt ${d.attempt} in ${left.toFixed(1)} s` : `${before}; attempt ${d.attempt} running…`);
    row.dataset.attempt = String(d.attempt);
    if (left <= 0) stopCountdown(d.step_id);
  };
  tick();
  if (startsAt > Date.now()) state.countdowns.set(d.step_id, setInterval(tick, 100));
}

// The run stopped (cancelled, failed): a step still in flight will not finish.
function stopSteps(reason) {
  for (const [stepId, step] of state.steps) {
    if (step.state === "running" || step.state === "retrying") setStep({ step_id: stepId }, "stopped", `stopped: ${reason}`);
  }
}

// A retry runs again from `fromStep` (or from the first step that did not complete): those steps
// are pending again, whatever the run before said of them.
function resetSteps(fromStep) {
  let from = false;
  for (const [stepId, step] of state.steps) {
    from = from || (fromStep ? stepId === fromStep : step.state !== "completed");
    if (from) {
      setStep({ step_id: stepId }, "pending", "pending");
      const output = document.querySelector(`#steps li[data-step-id="${CSS.escape(stepId)}"] .output`);
      if (output) output.remove();
    }
  }
}

function showApproval(d) {
  setNotice("This task waits for your approval before its report: approve to write it, or reject to end it.");
  const box = $("#approval-box");
  const summary = d.summary ? el("pre", { text: d.summary }) : null;
  const sources = (d.sources || []).length ? el("ul", {}, ...d.sources.map((s) => el("li", { text: s }))) : null;
  const deadline = d.timeout_seconds ? el("p", { className: "muted", text: `Unanswered after ${d.timeout_seconds} s, the task fails.` }) : null;
  box.replaceChildren(el("h4", { text: "What the analyzer found" }), summary, sources ? el("h4", { text: "Sources" }) : null, sources, deadline);
  box.hidden = false;
}

function showReport(markdown) {
  const report = $("#report");
  report.replaceChildren(window.renderMarkdown(markdown));
  report.dataset.ready = "true";
}

function summary(event) {
  const d = event.data || {};
  switch (event.event_type) {
    case "task_queued":
      return `waiting for a free slot (position ${d.position})`;
    case "plan_created":
      return (d.steps || []).map((s) => s.agent_type).join(" → ");
    case "step_started":
      return `${d.step_id} ${d.agent_type}`;
    case "step_retrying":
      return `${d.step_id} ${d.agent_type}: attempt ${d.attempt} in ${d.delay_seconds ?? "?"} s after ${d.error}`;
    case "partial_output":
      if (d.delta !== undefined) return `${d.step_id} ${d.agent_type}: +${d.delta.length} characters`;
      return `${d.step_id} ${d.agent_type}: ${String(d.output || "").split("\n")[0].slice(0, 120)}`;
    case "step_completed":
      return `${d.step_id} ${d.agent_type} in ${d.attempts} attempt(s)`;
    case "error":
      return `${d.step_id || ""} ${errorText(d)}`;
    case "approval_requested":
      return `before ${d.step_id || "the report"}: approve or reject`;
    case "task_cancelled":
      return d.reason ? `reason: ${d.reason}` : "no reason given";
    case "task_retried":
      return d.from_step ? `from ${d.from_step}` : "from the step that did not complete";
    case "task_failed":
      return d.error_message || "";
    case "task_completed":
      return "the report is ready";
    default:
      return Object.keys(d).length ? JSON.stringify(d).slice(0, 200) : "";
  }
}

function clearStreamed(d) {
  const pre = stepRow(d.step_id, d.agent_type).querySelector(".output pre");
  if (pre) pre.textContent = "";
}

function applyEvent(event) {
  const d = event.data || {};
  $("#events").append(
    el(
      "li",
      { dataset: { cursor: String(event.cursor), type: event.event_type } },
      el("time", { text: clock(event.timestamp) }),
      " ",
      el("code", { text: event.event_type }),
      " ",
      el("span", { text: summary(event) }),
    ),
  );
  state.timeline.apply(event);
  switch (event.event_type) {
    case "plan_created":
      for (const step of d.steps || []) stepRow(step.step_id, step.agent_type, step.description);
      break;
    case "step_started":
      setStep(d, "running", d.attempt > 1 ? `attempt ${d.attempt} running…` : "running…");
      clearStreamed(d);
      break;
    case "step_retrying":
      clearStreamed(d); // the next attempt streams its answer again from the start
      retryCountdown(event);
      break;
    case "partial_output": {
      const row = stepRow(d.step_id, d.agent_type);
      let output = row.querySelector(".output");
      if (!output) {
        output = el("details", { className: "output" }, el("summary", { text: "output" }), el("pre"));
        row.append(output);
      }
      if (d.delta !== undefined) {
        // A model's answer as it streams: the batches add up to the step's output.
        output.open = true;
        output.querySelector("pre").textContent += d.delta;
      } else {
        output.querySelector("pre").textContent = d.output || "";
      }
      break;
    }
    case "step_completed":
      setStep(d, "completed", `done in ${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`);
      break;
    case "error":
      if (d.step_id) setStep(d, "failed", `failed: ${errorText(d)}`);
      break;
    case "approval_requested":
      showApproval(d);
      break;
    case "approval_granted":
    case "approval_rejected":
      setNotice("");
      $("#approval-box").hidden = true;
      break;
    case "task_retried":
      resetSteps(d.from_step);
      setNotice("");
      $("#task-error").textContent = "";
      $("#report").replaceChildren(el("p", { className: "muted", text: "The writer's report appears here when the task completes." }));
      delete $("#report").dataset.ready;
      break;
    case "task_completed":
      showReport(d.final_output || "");
      break;
    case "task_cancelled":
      stopSteps("task cancelled");
      setNotice(`Cancelled${d.reason ? `: ${d.reason}` : "."}`);
      break;
    case "task_failed":
    case "task_rejected":
      stopSteps("task failed");
      $("#task-error").textContent = d.error_message || d.reason || event.event_type.replace(/_/g, " ");
      break;
    default:
      break;
  }
  // The badge last: the step list it reads (for the graph and the controls) is up to date.
  setStatus(STATUS_AFTER[event.event_type] || state.status);
}
