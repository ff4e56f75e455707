"use strict";
// The task's timeline: one row per step, one bar per attempt, placed by the events' timestamps
// (step_started opens attempt 1; step_retrying closes an attempt and the next one opens after its
// delay; step_completed, error or the task's end close the last). Drawn from the event log only,
// so a page opened late or re-attached draws the same picture.
(function (global) {
  function create(container, totalNode) {
    const steps = new Map(); // step_id -> {agent, attempts: [{n, start, end, outcome, error}]}
    let first = null;
    let last = null;

    function stepOf(d) {
      if (!steps.has(d.step_id)) steps.set(d.step_id, { agent: d.agent_type || "", attempts: [] });
      const step = steps.get(d.step_id);
      if (d.agent_type) step.agent = d.agent_type;
      return step;
    }

    function open(step) {
      const attempts = step.attempts;
      return attempts.length && attempts[attempts.length - 1].end === null ? attempts[attempts.length - 1] : null;
    }

    function close(step, at, outcome, error) {
      const attempt = open(step);
      if (attempt) Object.assign(attempt, { end: Math.max(at, attempt.start), outcome, error: error || "" });
    }

    function apply(event) {
      const at = Date.parse(event.timestamp);
      if (Number.isNaN(at)) return;
      if (first === null) first = at;
      last = Math.max(last ?? at, at);
      const d = event.data || {};
      switch (event.event_type) {
        case "plan_created":
          for (const s of d.steps || []) stepOf(s);
          break;
        case "step_started": {
          const step = stepOf(d);
          close(step, at, "stopped");
          step.attempts.push({ n: d.attempt || step.attempts.length + 1, start: at, end: null, outcome: "running" });
          break;
        }
        case "step_retrying": {
          const step = stepOf(d);
          close(step, at, "retried", d.error);
          const start = at + 1000 * Number(d.delay_seconds || 0);
          step.attempts.push({ n: d.attempt || step.attempts.length + 1, start, end: null, outcome: "running" });
          break;
        }
        case "step_completed":
          close(stepOf(d), at, "ok");
          break;
        case "error":
          if (d.step_id) close(stepOf(d), at, "failed", d.error);
          break;
        case "task_cancelled":
        case "task_failed":
          for (const step of steps.values()) close(step, at, "stopped");
          break;
        default:
          break;
      }
      draw();
    }

    function seconds(ms) {
      return `${(ms / 1000).toFixed(2)} s`;
    }

    function draw() {
      container.replaceChildren();
      if (first === null) return;
      const end = Math.max(last, ...[...steps.values()].flatMap((s) => s.attempts.map((a) => a.end ?? a.start)));
      const span = Math.max(end - first, 1);
      for (const [stepId, step] of steps) {
        const track = document.createElement("div");
        track.className = "track";
        for (const attempt of step.attempts) {
          const bar = document.createElement("span");
          const stop = attempt.end ?? end;
          bar.className = `bar attempt-${attempt.outcome}`;
          bar.dataset.attempt = String(attempt.n);
          bar.dataset.outcome = attempt.outcome;
          bar.style.left = `${(100 * (attempt.start - first)) / span}%`;
          bar.style.width = `${Math.max((100 * (stop - attempt.start)) / span, 0.5)}%`;
          bar.title = `attempt ${attempt.n}: ${attempt.outcome}${attempt.error ? ` (${attempt.error})` : ""}, ` +
            `${seconds(stop - attempt.start)} from +${seconds(attempt.start - first)}`;
          track.append(bar);
        }
        const took = step.attempts.length ? (step.attempts[step.attempts.length - 1].end ?? end) - step.attempts[0].start : 0;
        const label = document.createElement("span");
        label.className = "label";
        label.textContent = `${stepId} ${step.agent}`;
        const time = document.createElement("span");
        time.className = "took muted";
        time.textContent = step.attempts.length ? seconds(took) : "";
        const row = document.createElement("div");
        row.className = "timeline-row";
        row.dataset.stepId = stepId;
        row.append(label, track, time);
        container.append(row);
      }
      totalNode.textContent = `${seconds(end - first)} from the first event to the last`;
      totalNode.dataset.seconds = String((end - first) / 1000);
    }

    function reset() {
      steps.clear();
      first = null;
      last = null;
      container.replaceChildren();
      totalNode.textContent = "";
      delete totalNode.dataset.seconds;
    }

    return { apply, reset };
  }

  global.createTimeline = create;
})(window);
