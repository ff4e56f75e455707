"use strict";
// The web view of the agentic task system: plain JavaScript over the public API, no build step.
//
// - #/              the caller's tasks and a form to create and run one
// - #/tasks/<id>    the task's live timeline: its NDJSON stream read with fetch() and a streaming
//                   reader; after a dropped connection it re-attaches with Last-Event-ID (the last
//                   cursor seen), so no event is shown twice and none is lost.
// Task controls (approve, reject, cancel, retry) appear only if the server's OpenAPI has their routes.

const TOKEN_KEY = "agentic.token";
const TERMINAL_EVENTS = new Set(["task_completed", "task_failed", "task_cancelled", "task_rejected"]);
const TERMINAL_STATUSES = new Set(["completed", "failed", "cancelled", "rejected"]);
const ACTIONS = ["approve", "reject", "cancel", "retry"];
const ACTION_ALLOWED = {
  approve: (status) => status === "awaiting_approval",
  reject: (status) => status === "awaiting_approval",
  cancel: (status) => !TERMINAL_STATUSES.has(status),
  retry: (status) => status === "failed" || status === "cancelled",
};
// What each event type makes of the task's status, for the badge while the stream runs.
const STATUS_AFTER = {
  task_queued: "pending",
  task_started: "analyzing",
  plan_created: "executing",
  approval_requested: "awaiting_approval",
  approval_granted: "executing",
  task_retried: "executing",
  task_completed: "completed",
  task_failed: "failed",
  task_cancelled: "cancelled",
  task_rejected: "rejected",
};
const MAX_RECONNECT_DELAY_MS = 5000;

const $ = (selector) => document.querySelector(selector);
const state = {
  features: { actions: new Set(), approval: false, statuses: ["pending", "analyzing", "executing", "completed", "failed"] },
  follow: null, // the AbortController of the stream being read
  autorun: null, // a task created by the form: its page executes it
  taskId: null,
  status: null,
  listCursor: null,
  listTimer: null,
};

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || "http_error";
  }
}

// --- the API ----------------------------------------------------------------------------------

function authHeaders(extra = {}) {
  const headers = { ...extra };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401) askForToken(sessionStorage.getItem(TOKEN_KEY) ? "That token was refused." : "");
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

async function detectFeatures() {
  try {
    const spec = await (await fetch("/openapi.json")).json();
    const paths = spec.paths || {};
    for (const action of ACTIONS) {
      if (paths[`/tasks/{task_id}/${action}`] && paths[`/tasks/{task_id}/${action}`].post) state.features.actions.add(action);
    }
    const schemas = (spec.components && spec.components.schemas) || {};
    const create = schemas.TaskCreate;
    state.features.approval = Boolean(create && create.properties && create.properties.approval);
    if (schemas.TaskStatus && Array.isArray(schemas.TaskStatus.enum)) state.features.statuses = schemas.TaskStatus.enum;
  } catch (err) {
    // No OpenAPI: the basic view still works, without task controls.
  }
}

// --- token ------------------------------------------------------------------------------------

function askForToken(message) {
  stopFollowing();
  for (const id of ["list-view", "task-view"]) $(`#${id}`).hidden = true;
  $("#token-view").hidden = false;
  $("#token-error").textContent = message || "";
  $("#token-input").focus();
}

function setupToken() {
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
    $("#token-input").value = "";
    $("#token-view").hidden = true;
    route();
  });
  $("#forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    route();
  });
}

// --- helpers ----------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function badge(node, status) {
  node.textContent = status.replace(/_/g, " ");
  node.className = `badge status-${status}`;
  node.dataset.status = status;
}

function clock(timestamp) {
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- the list ---------------------------------------------------------------------------------

async function loadList(append = false) {
  const params = new URLSearchParams({ limit: "20" });
  const status = $("#status-filter").value;
  if (status) params.set("status", status);
  if (append && state.listCursor) params.set("cursor", state.listCursor);
  try {
    const page = await api("GET", `/tasks?${params}`);
    const body = $("#task-table tbody");
    if (!append) body.replaceChildren();
    for (const task of page.items) {
      const status = el("span");
      badge(status, task.status);
      body.append(
        el(
          "tr",
          { dataset: { taskId: task.task_id } },
          el("td", {}, status),
          el("td", {}, el("a", { href: `#/tasks/${task.task_id}`, text: task.user_input.slice(0, 140) })),
          el("td", { className: "muted", text: new Date(task.created_at).toLocaleString() }),
        ),
      );
    }
    state.listCursor = page.next_cursor;
    $("#more").hidden = !page.next_cursor;
    $("#list-empty").hidden = body.children.length > 0;
    $("#list-error").textContent = "";
  } catch (err) {
    if (err.status !== 401) $("#list-error").textContent = err.message;
  }
}

function showList() {
  $("#list-view").hidden = false;
  $("#approval-label").hidden = !state.features.approval;
  loadList();
  // Keep the statuses fresh while the list is on screen.
  state.listTimer = setInterval(() => {
    if (!document.hidden && !state.listCursor) loadList();
  }, 5000);
}

function setupList() {
  const filter = $("#status-filter");
  for (const status of state.features.statuses) filter.append(el("option", { value: status, text: status.replace(/_/g, " ") }));
  filter.addEventListener("change", () => loadList());
  $("#refresh").addEventListener("click", () => loadList());
  $("#more").addEventListener("click", () => loadList(true));
  $("#create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const description = $("#description").value;
    const body = { description };
    if (state.features.approval && $("#approval").checked) body.approval = true;
    $("#create-button").disabled = true;
    try {
      const task = await api("POST", "/tasks", body);
      $("#description").value = "";
      $("#create-error").textContent = "";
      state.autorun = task.task_id;
      location.hash = `#/tasks/${task.task_id}`;
    } catch (err) {
      if (err.status !== 401) $("#create-error").textContent = err.message;
    } finally {
      $("#create-button").disabled = false;
    }
  });
}

// --- the task page ----------------------------------------------------------------------------

function setStatus(status) {
  state.status = status;
  badge($("#task-status"), status);
  for (const button of document.querySelectorAll("[data-action]")) {
    const action = button.dataset.action;
    button.hidden = !(state.features.actions.has(action) && ACTION_ALLOWED[action](status));
  }
}

function setStreamState(text) {
  $("#stream-state").textContent = text;
  $("#stream-state").dataset.state = text;
}

function stepRow(stepId, agentType, description) {
  let row = document.querySelector(`#steps li[data-step-id="${CSS.escape(stepId)}"]`);
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
  return row;
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
      return `${d.step_id || ""} ${d.error}: ${d.message}`;
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
  if (STATUS_AFTER[event.event_type]) setStatus(STATUS_AFTER[event.event_type]);
  switch (event.event_type) {
    case "plan_created":
      for (const step of d.steps || []) stepRow(step.step_id, step.agent_type, step.description);
      break;
    case "step_started":
      setStep(d, "running", "running…");
      clearStreamed(d);
      break;
    case "step_retrying":
      clearStreamed(d); // the next attempt streams its answer again from the start
      setStep(d, "retrying", `attempt ${d.attempt - 1} failed (${d.error}); attempt ${d.attempt} in ${d.delay_seconds ?? "?"} s`);
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
      if (d.step_id) setStep(d, "failed", `failed: ${d.message || d.error}`);
      break;
    case "approval_requested":
      $("#task-error").textContent = "This task waits for your approval before the report.";
      break;
    case "task_completed":
      showReport(d.final_output || "");
      break;
    case "task_failed":
    case "task_cancelled":
    case "task_rejected":
      $("#task-error").textContent = d.error_message || d.reason || event.event_type.replace(/_/g, " ");
      break;
    default:
      break;
  }
}

function stopFollowing() {
  if (state.follow) state.follow.abort();
  state.follow = null;
}

// Reads the task's stream to its terminal event, re-attaching after the last cursor whenever the
// connection drops or the server ends the stream early (stream_timeout, server_stopping). While the task
// waits for a person the server may end the stream with stream_paused: come back after its retry_after_seconds.
async function follow(taskId, execute) {
  stopFollowing();
  const controller = new AbortController();
  state.follow = controller;
  let after = 0;
  let delay = 250;
  let reconnects = 0;
  const path = `/tasks/${encodeURIComponent(taskId)}/${execute ? "execute" : "events"}`;
  while (!controller.signal.aborted) {
    let ended = false;
    let pausedMs = 0;
    try {
      setStreamState(reconnects ? "reconnecting" : "connecting");
      const headers = authHeaders(after ? { "Last-Event-ID": String(after) } : {});
      const response = await fetch(path, { method: execute ? "POST" : "GET", headers, signal: controller.signal, cache: "no-store" });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        if (response.status === 401) return askForToken("That token was refused.");
        if (response.status !== 429 && response.status < 500) {
          setStreamState("stopped");
          $("#task-error").textContent = (body && body.message) || `HTTP ${response.status}`;
          return;
        }
        $("#task-error").textContent = `${(body && body.message) || "server busy"}; trying again`;
        delay = Math.max(delay, 1000 * Number(response.headers.get("Retry-After") || 1));
      } else {
        setStreamState("live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let newline;
          while ((newline = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, newline).trim();
            buffer = buffer.slice(newline + 1);
            if (!line) continue;
            const event = JSON.parse(line);
            // The server stops (the task goes on): re-attach once it or another server answers.
            if (event.event_type === "server_stopping") delay = Math.max(delay, 1000 * Number(event.data.retry_after || 1));
            if (event.event_type === "stream_paused") {
              pausedMs = 1000 * Number((event.data && event.data.retry_after_seconds) || 1);
            }
            // keepalive, stream_timeout, server_stopping and stream_paused carry no cursor; events already shown are skipped.
            if (typeof event.cursor !== "number" || event.cursor <= after) continue;
            after = event.cursor;
            delay = 250;
            applyEvent(event);
            // A retried task's log holds an earlier end followed by task_retried: the last end counts.
            if (TERMINAL_EVENTS.has(event.event_type)) ended = true;
            else if (event.event_type === "task_retried") ended = false;
          }
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    if (ended) {
      setStreamState("ended");
      if (state.follow === controller) state.follow = null;
      refreshTask(taskId);
      return;
    }
    if (controller.signal.aborted) return;
    if (pausedMs) {
      // Waiting for a person: not a lost connection. Look again when the server said.
      setStreamState("waiting");
      await sleep(pausedMs);
      continue;
    }
    reconnects += 1;
    $("#reconnects").textContent = `(re-attached ${reconnects}×)`;
    $("#reconnects").dataset.count = String(reconnects);
    setStreamState("reconnecting");
    await sleep(delay);
    delay = Math.min(delay * 2, MAX_RECONNECT_DELAY_MS);
  }
}

async function refreshTask(taskId) {
  try {
    const task = await api("GET", `/tasks/${encodeURIComponent(taskId)}/status`);
    if (state.taskId === taskId) setStatus(task.status);
  } catch (err) {
    // The timeline already shows what the stream said.
  }
}

async function showTask(taskId) {
  state.taskId = taskId;
  $("#task-view").hidden = false;
  $("#steps").replaceChildren();
  $("#events").replaceChildren();
  $("#report").replaceChildren(el("p", { className: "muted", text: "The writer's report appears here when the task completes." }));
  delete $("#report").dataset.ready;
  $("#task-error").textContent = "";
  $("#reconnects").textContent = "";
  $("#task-id").textContent = taskId;
  $("#execute").hidden = true;
  setStreamState("idle");
  let task;
  try {
    task = await api("GET", `/tasks/${encodeURIComponent(taskId)}/status`);
  } catch (err) {
    if (err.status !== 401) $("#task-error").textContent = err.message;
    return;
  }
  $("#task-title").textContent = task.user_input;
  setStatus(task.status);
  for (const step of task.steps) stepRow(step.step_id, step.agent_type, step.description);
  const autorun = state.autorun === taskId;
  state.autorun = null;
  if (task.status === "pending" && !autorun) {
    $("#execute").hidden = false; // not started yet: the user decides
    return;
  }
  follow(taskId, autorun);
}

function setupTask() {
  $("#execute").addEventListener("click", () => {
    $("#execute").hidden = true;
    follow(state.taskId, true);
  });
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", async () => {
      const action = button.dataset.action;
      const taskId = state.taskId;
      try {
        const task = await api("POST", `/tasks/${encodeURIComponent(taskId)}/${action}`, {});
        $("#task-error").textContent = "";
        if (task && task.status) setStatus(task.status);
        if (action === "retry" || action === "approve") follow(taskId, false);
      } catch (err) {
        if (err.status === 405 || (err.status === 404 && err.code === "not_found")) {
          $("#task-error").textContent = `This server does not support ${action} yet.`;
          state.features.actions.delete(action);
          setStatus(state.status);
        } else if (err.status !== 401) {
          $("#task-error").textContent = err.message;
        }
      }
    });
  }
}

// --- routing ----------------------------------------------------------------------------------

function route() {
  stopFollowing();
  clearInterval(state.listTimer);
  for (const id of ["token-view", "list-view", "task-view"]) $(`#${id}`).hidden = true;
  $("#forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  const match = /^#\/tasks\/([^/?#]+)/.exec(location.hash);
  if (match) showTask(decodeURIComponent(match[1]));
  else showList();
}

async function main() {
  await detectFeatures();
  setupToken();
  setupList();
  setupTask();
  window.addEventListener("hashchange", route);
  route();
}

main();
