"use strict";
// The pipeline as a graph, drawn from GET /pipeline (the ASL file the server runs, so there is no
// second definition): one box per state, top to bottom by the longest path from StartAt, an arrow
// per transition (solid) and per Catch (dashed). The state running the task's current step is
// highlighted; states of completed steps are marked done.
(function (global) {
  const SVG = "http://www.w3.org/2000/svg";
  const BOX_W = 150;
  const BOX_H = 40;
  const GAP_X = 24;
  const GAP_Y = 26;

  function node(tag, attrs, text) {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function layers(graph) {
    const byName = new Map(graph.states.map((s) => [s.name, s]));
    const depth = new Map([[graph.start_at, 0]]);
    // Longest path from StartAt (the ASL is a DAG; the bound stops a cycle from looping forever).
    for (let round = 0; round < graph.states.length; round += 1) {
      let changed = false;
      for (const state of graph.states) {
        if (!depth.has(state.name)) continue;
        for (const target of [...state.next, ...state.catch]) {
          if (byName.has(target) && (depth.get(target) ?? -1) < depth.get(state.name) + 1) {
            depth.set(target, depth.get(state.name) + 1);
            changed = true;
          }
        }
      }
      if (!changed) break;
    }
    const rows = [];
    for (const state of graph.states) {
      const d = depth.get(state.name) ?? 0;
      (rows[d] = rows[d] || []).push(state);
    }
    return rows.filter(Boolean);
  }

  function draw(container, graph) {
    const rows = layers(graph);
    const columns = Math.max(...rows.map((r) => r.length));
    const width = columns * (BOX_W + GAP_X) + GAP_X + 40;
    const height = rows.length * (BOX_H + GAP_Y) + GAP_Y;
    const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
    svg.append(node("title", {}, "The pipeline's state machine"));
    const defs = node("defs", {});
    const marker = node("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    marker.append(node("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
    defs.append(marker);
    svg.append(defs);
    const place = new Map();
    rows.forEach((row, r) => {
      const offset = (width - 40 - row.length * (BOX_W + GAP_X) + GAP_X) / 2;
      row.forEach((state, c) => {
        place.set(state.name, { x: offset + c * (BOX_W + GAP_X), y: GAP_Y / 2 + r * (BOX_H + GAP_Y) });
      });
    });
    const edges = node("g", { class: "edges" });
    for (const state of graph.states) {
      const from = place.get(state.name);
      const targets = [...state.next.map((t) => [t, "next"]), ...state.catch.map((t) => [t, "catch"])];
      for (const [target, kind] of targets) {
        const to = place.get(target);
        if (!from || !to) continue;
        const x1 = from.x + BOX_W / 2;
        const y1 = from.y + BOX_H;
        const x2 = to.x + BOX_W / 2;
        const y2 = to.y;
        const skip = to.y - from.y > BOX_H + GAP_Y + 1;
        // An edge that skips rows bends out to the side (catches right, others left) around the boxes.
        const side = kind === "catch" ? width - 20 : 12;
        const d = skip
          ? `M ${x1} ${y1} C ${x1} ${y1 + GAP_Y}, ${side} ${y1 + GAP_Y}, ${side} ${(y1 + y2) / 2} S ${x2} ${y2 - GAP_Y}, ${x2} ${y2}`
          : `M ${x1} ${y1} L ${x2} ${y2}`;
        edges.append(node("path", { d, class: `edge edge-${kind}`, "marker-end": "url(#arrow)" }));
      }
    }
    svg.append(edges);
    for (const state of graph.states) {
      const at = place.get(state.name);
      const group = node("g", {
        class: `state state-${state.type.toLowerCase()}`,
        "data-state-name": state.name,
        "data-step-id": state.step_id || "",
        "data-action": state.action || "",
        transform: `translate(${at.x} ${at.y})`,
      });
      group.append(node("rect", { width: BOX_W, height: BOX_H, rx: state.type === "Choice" ? 16 : 6 }));
      group.append(node("text", { x: BOX_W / 2, y: state.agent_type ? 16 : 25, "text-anchor": "middle", class: "name" }, state.name));
      if (state.agent_type) {
        group.append(node("text", { x: BOX_W / 2, y: 32, "text-anchor": "middle", class: "agent" }, `${state.step_id} ${state.agent_type}`));
      }
      if (state.comment) group.append(node("title", {}, `${state.name} (${state.type}): ${state.comment}`));
      svg.append(group);
    }
    container.replaceChildren(svg);
  }

  // Highlight where the task is: `current` is the step id running now, or an action ("plan",
  // "await_approval") while the task plans or waits; `done` holds the completed step ids.
  function highlight(container, current, done) {
    for (const group of container.querySelectorAll("g.state")) {
      const { stepId, action } = group.dataset;
      const here = Boolean(current) && (stepId ? stepId === current : action === current);
      group.classList.toggle("current", here);
      group.classList.toggle("done", Boolean(stepId) && done.has(stepId));
      if (here) group.setAttribute("aria-current", "step");
      else group.removeAttribute("aria-current");
    }
  }

  global.pipelineGraph = { draw, highlight };
})(window);
