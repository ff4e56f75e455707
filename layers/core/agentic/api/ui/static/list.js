"use strict";
// Finding tasks. The list: a page at a time ("More" goes on with the API's cursor), filtered by status
// (the API's filter) and by words and a date (read page by page here: the API has no such filter).
// And a short id in the address: the task it is the start of.
// Uses app.js's globals ($, el, api, badge, state).

const LIST_PAGE = 20;

function listQuery() {
  const words = $("#search").value.toLowerCase().split(/\s+/).filter(Boolean);
  const since = $("#since").value ? new Date(`${$("#since").value}T00:00:00`) : null;
  return {
    filters: words.length > 0 || since !== null,
    since,
    matches: (task) =>
      (!since || new Date(task.created_at) >= since) &&
      words.every((word) => `${task.task_id} ${task.user_input}`.toLowerCase().includes(word)),
  };
}

// One page of the list; with a search or a date, pages are read until a page's worth of tasks match
// (the API filters by status only), newest first, so "More" goes on where this stopped.
async function loadList(append = false) {
  const query = listQuery();
  const status = $("#status-filter").value;
  let cursor = append ? state.listCursor : null;
  const found = [];
  try {
    do {
      const params = new URLSearchParams({ limit: String(query.filters ? 100 : LIST_PAGE) });
      if (status) params.set("status", status);
      if (cursor) params.set("cursor", cursor);
      const page = await api("GET", `/tasks?${params}`);
      cursor = page.next_cursor;
      for (const task of page.items) {
        if (query.since && new Date(task.created_at) < query.since) cursor = null; // older from here on
        else if (query.matches(task)) found.push(task);
      }
    } while (query.filters && cursor && found.length < LIST_PAGE);
    const body = $("#task-table tbody");
    if (!append) body.replaceChildren();
    for (const task of found) {
      const status = el("span");
      badge(status, task.status);
      body.append(
        el(
          "tr",
          { dataset: { taskId: task.task_id } },
          el("td", {}, status),
          el("td", {}, el("a", { href: `#/tasks/${task.task_id}`, text: task.user_input.slice(0, 140) })),
          el("td", { className: "muted created", text: new Date(task.created_at).toLocaleString() }),
        ),
      );
    }
    state.listCursor = cursor;
    state.listShown = body.children.length;
    $("#more").hidden = !cursor;
    $("#list-empty").textContent = query.filters || status ? "No task matches." : "No tasks yet.";
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
    if (!document.hidden && !state.listCursor && !listQuery().filters) loadList();
  }, 5000);
}

function setupList() {
  const filter = $("#status-filter");
  for (const status of state.features.statuses) filter.append(el("option", { value: status, text: status.replace(/_/g, " ") }));
  filter.addEventListener("change", () => loadList());
  let typing = null;
  $("#search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => loadList(), 250);
  });
  $("#since").addEventListener("change", () => loadList());
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

// A short id (#/tasks/0a620ca9): the one task whose id starts with it, as git resolves a short
// commit id. Several: they are listed to pick from. Returns whether it handled the page.
async function resolvePrefix(prefix) {
  if (!/^[0-9a-f][0-9a-f-]{3,34}$/.test(prefix)) return false;
  const found = [];
  let cursor = null;
  do {
    const params = new URLSearchParams({ limit: "100" });
    if (cursor) params.set("cursor", cursor);
    const page = await api("GET", `/tasks?${params}`);
    found.push(...page.items.filter((task) => task.task_id.startsWith(prefix)));
    cursor = page.next_cursor;
  } while (cursor && state.taskId === prefix);
  if (state.taskId !== prefix || found.length === 0) return state.taskId !== prefix;
  if (found.length === 1) {
    location.replace(`#/tasks/${found[0].task_id}`);
    return true;
  }
  $("#task-title").textContent = `${found.length} tasks start with ${prefix}`;
  $("#task-error").replaceChildren(
    "Which one? ",
    ...found.slice(0, 20).map((task) => el("a", { href: `#/tasks/${task.task_id}`, className: "candidate", text: `${task.task_id} (${task.user_input.slice(0, 40)}) ` })),
  );
  return true;
}
