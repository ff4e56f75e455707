"use strict";
// The web view of the agentic task system: plain JavaScript over the public API, no build step.
//
// - #/              the caller's tasks and a form to create and run one
// - #/tasks/<id>    the task's live timeline: its NDJSON stream read with fetch() and a streaming
//                   reader; after a dropped connection it re-attaches with Last-Event-ID (the last
//                   cursor seen), so no event is shown twice and none is lost.
// Task controls (approve, reject, cancel, retry) appear only if the server's OpenAPI has their routes.
// list.js holds the task list, events.js what each event does to the task page, timeline.js draws the steps' attempts over time, graph.js the pipeline
// (GET /pipeline, the ASL file). They share this file's globals (classic scripts, no build step).

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
  after: 0, // the last cursor shown on the task page: a new stream (after retry, approve) goes on from it
  listCursor: null,
  listTimer: null,
  listShown: 0,
  countdowns: new Map(), // step_id -> interval of a retry's countdown
  steps: new Map(), // step_id -> {agent, state}: what the step list shows, for the graph and retry-from
  pipeline: null, // GET /pipeline, drawn once it is known
  timeline: null,
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
  try {
    const response = await fetch("/pipeline");
    if (response.ok) state.pipeline = await response.json();
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

// "Error: message" once: a message often starts with its error's name already.
function errorText(d) {
  const error = d.error || "";
  const message = d.message || "";
  if (!error || message === error || message.startsWith(`${error}:`)) return message || error;
  return message ? `${error}: ${message}` : error;
}

function clock(timestamp) {
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- the task page ----------------------------------------------------------------------------

function setStatus(status) {
  state.status = status;
  $("#task-status").hidden = !status;
  if (status) badge($("#task-status"), status);
  for (const button of document.querySelectorAll("[data-action]")) {
    const action = button.dataset.action;
    button.hidden = !(status && state.features.actions.has(action) && ACTION_ALLOWED[action](status));
  }
  $("#retry-from-label").hidden = $('[data-action="retry"]').hidden || state.steps.size === 0;
  if (status !== "awaiting_approval") $("#approval-box").hidden = true;
  drawWhere();
}

// The pipeline graph's highlight: the step running, or planning, or the approval wait.
function drawWhere() {
  if (!state.pipeline) return;
  const done = new Set([...state.steps].filter(([, s]) => s.state === "completed").map(([id]) => id));
  const running = [...state.steps].find(([, s]) => s.state === "running" || s.state === "retrying");
  let current = running ? running[0] : null;
  if (state.status === "analyzing") current = "plan";
  if (state.status === "awaiting_approval") current = "await_approval";
  window.pipelineGraph.highlight($("#pipeline"), current, done);
}

function setNotice(text) {
  $("#task-notice").textContent = text;
  $("#task-notice").hidden = !text;
}

function stopCountdown(stepId) {
  clearInterval(state.countdowns.get(stepId));
  state.countdowns.delete(stepId);
}

function setStreamState(text) {
  $("#stream-state").textContent = text;
  $("#stream-state").dataset.state = text;
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
  let after = state.after;
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
            state.after = after;
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
    if (state.taskId === taskId) {
      setStatus(task.status);
      showTotal(task);
    }
  } catch (err) {
    // The timeline already shows what the stream said.
  }
}

function showTotal(task) {
  $("#task-total").textContent = task.duration_seconds == null ? "" : ` · took ${task.duration_seconds.toFixed(2)} s`;
}

async function showTask(taskId) {
  state.taskId = taskId;
  $("#task-view").hidden = false;
  // Nothing of the task shown before stays: title, badge, controls, steps, notices.
  for (const stepId of state.countdowns.keys()) stopCountdown(stepId);
  state.steps.clear();
  state.after = 0;
  $("#retry-from").replaceChildren(el("option", { value: "", text: "the step that did not complete" }));
  $("#task-title").textContent = "";
  $("#task-total").textContent = "";
  setStatus(null);
  setNotice("");
  $("#approval-box").hidden = true;
  state.timeline.reset();
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
    if (state.taskId !== taskId) return;
    if (err.status === 404 && (await resolvePrefix(taskId))) return;
    if (err.status === 404) $("#task-title").textContent = "No such task";
    if (err.status !== 401) $("#task-error").textContent = err.message;
    return;
  }
  if (state.taskId !== taskId) return; // the user went on to another page meanwhile
  $("#task-title").textContent = task.user_input;
  for (const step of task.steps) stepRow(step.step_id, step.agent_type, step.description);
  setStatus(task.status);
  showTotal(task);
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
      if (action === "cancel" && !window.confirm("Cancel this task? Its run stops now; you can retry it later.")) return;
      const body = {};
      if (action === "retry" && $("#retry-from").value) body.from_step = $("#retry-from").value;
      try {
        const task = await api("POST", `/tasks/${encodeURIComponent(taskId)}/${action}`, body);
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
  state.timeline = window.createTimeline($("#timeline"), $("#timeline-total"));
  await detectFeatures();
  if (state.pipeline) {
    window.pipelineGraph.draw($("#pipeline"), state.pipeline);
    $("#pipeline-details").hidden = false;
  }
  setupToken();
  setupList();
  setupTask();
  window.addEventListener("hashchange", route);
  route();
}

main();
