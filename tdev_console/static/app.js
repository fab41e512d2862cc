// The console's page: a hash router and one view per resource. Everything shown comes from /api/* (one read of
// a service each) and /api/*/events (the services' Watch streams as server-sent events).
import { api, badge, debounce, diffView, h, json, live, put, s, when } from "./dom.js";

const main = document.getElementById("main");
let cleanup = () => {};

const NODE_STATE_OF_EVENT = {
  TYPE_NODE_SCHEDULED: "STATE_SCHEDULED", TYPE_NODE_STARTED: "STATE_RUNNING", TYPE_NODE_RETRYING: "STATE_RETRYING",
  TYPE_NODE_SUCCEEDED: "STATE_SUCCEEDED", TYPE_NODE_FAILED: "STATE_FAILED", TYPE_NODE_SKIPPED: "STATE_SKIPPED",
  TYPE_NODE_CANCELLED: "STATE_CANCELLED",
};

function link(href, text) { return h("a", { href }, text); }
function short(hash) { return (hash || "").slice(0, 10); }
function row(href, cells, data) {
  return h("tr", { class: "link", dataset: data, onclick: () => { window.location.hash = href; } },
    cells.map((cell) => h("td", {}, cell)));
}
function table(headers, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), h("tbody", {}, rows));
}
function failure(error) { return h("p", { class: "error" }, `Cannot load: ${error.message}`); }
function eventLine(event) {
  const parts = [`#${event.sequence}`, (event.type || "").replace(/^TYPE_/, "").toLowerCase().replaceAll("_", " ")];
  if (event.node_id) parts.push(event.node_id);
  if (event.stage && event.stage !== "STAGE_UNSPECIFIED") parts.push(event.stage.replace(/^STAGE_/, "").toLowerCase());
  if (event.attempt) parts.push(`attempt ${event.attempt}`);
  if (event.backoff_seconds) parts.push(`backoff ${event.backoff_seconds.toFixed(2)} s`);
  if (event.message) parts.push(event.message);
  return h("div", {}, parts.join(" · "));
}
/** Re-reads a list every few seconds while its view is open: the list RPCs have no watch stream. */
function poll(render, ms = 2000) {
  let stopped = false;
  const tick = async () => { if (stopped) return; await render(); if (!stopped) timer = setTimeout(tick, ms); };
  let timer = setTimeout(tick, 0);
  return () => { stopped = true; clearTimeout(timer); };
}

// agents

async function agentsView() {
  const results = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const search = h("input", { type: "search", placeholder: "search agents in plain language", id: "agent-search" });
  const load = async () => {
    try {
      const q = search.value.trim();
      const body = await api(`/api/agents${q ? `?q=${encodeURIComponent(q)}` : ""}`);
      put(results, table(["name", "version", "quality", "executions", "success rate", q ? "score" : "updated"],
        body.results.map(({ agent, score }) => row(`#/agents/${encodeURIComponent(agent.agent_id)}`, [
          agent.name, agent.version, (agent.analysis?.quality_score ?? 0).toFixed(2),
          agent.metrics?.execution_count ?? 0, `${((agent.metrics?.success_rate ?? 0) * 100).toFixed(0)} %`,
          q ? (score ?? 0).toFixed(3) : when(agent.update_time)], { agent: agent.agent_id }))));
    } catch (error) { put(results, failure(error)); }
  };
  search.addEventListener("input", debounce(load, 300));
  put(main, h("h2", {}, "Agents"), search, results);
  await load();
  return () => {};
}

function lineageSvg(lineage, current) {
  const names = new Map((lineage.agents || []).map((a) => [`${a.agent_id}@${a.version}`, `${a.name} ${a.version}`]));
  const key = (ref) => `${ref.agent_id}@${ref.version}`;
  const keys = [...new Set([key(lineage.root || current), ...(lineage.edges || []).flatMap((e) => [key(e.parent), key(e.child)])])];
  const depth = new Map([[keys[0], 0]]);
  for (let i = 0; i < keys.length; i++) {
    for (const e of lineage.edges || []) {
      if (depth.has(key(e.child)) && !depth.has(key(e.parent))) depth.set(key(e.parent), depth.get(key(e.child)) + 1);
    }
  }
  const maxDepth = Math.max(0, ...depth.values());
  const rows = new Map();
  const pos = new Map();
  for (const k of keys) {
    const d = depth.get(k) ?? maxDepth;
    const r = rows.get(d) || 0; rows.set(d, r + 1);
    pos.set(k, { x: 20 + r * 190, y: 20 + (maxDepth - d) * 60 });
  }
  const width = 40 + Math.max(1, ...rows.values()) * 190;
  const svg = s("svg", { id: "agent-lineage", width, height: 60 + maxDepth * 60, viewBox: `0 0 ${width} ${60 + maxDepth * 60}` });
  for (const e of lineage.edges || []) {
    const a = pos.get(key(e.parent)); const b = pos.get(key(e.child));
    svg.append(s("line", { class: "edge", x1: a.x + 80, y1: a.y + 28, x2: b.x + 80, y2: b.y }));
  }
  for (const k of keys) {
    const p = pos.get(k);
    svg.append(s("g", { class: `dag-node ${k === key(current) ? "STATE_SUCCEEDED" : ""}` },
      s("rect", { x: p.x, y: p.y, width: 160, height: 28 }),
      s("text", { x: p.x + 8, y: p.y + 18 }, names.get(k) || k)));
  }
  return svg;
}

async function agentView(agentId, version) {
  const body = await api(`/api/agents/${encodeURIComponent(agentId)}${version ? `?version=${encodeURIComponent(version)}` : ""}`);
  const agent = body.agent;
  const m = agent.metrics || {};
  put(main,
    h("h2", {}, `${agent.name} `, h("span", { class: "muted" }, agent.version)),
    h("p", {}, agent.description || ""),
    h("div", { class: "grid" },
      h("div", {},
        h("h3", {}, "Code"), h("pre", { id: "agent-code" }, agent.code || ""),
        h("h3", {}, "Changes from parent versions"),
        body.diffs.length ? body.diffs.map((d) => h("div", {}, h("p", {}, `from ${d.parent.version}`), diffView(d.lines)))
          : h("p", { class: "muted" }, "no parent versions")),
      h("div", {},
        h("h3", {}, "Metrics"),
        table(["executions", "succeeded", "failed", "mean ms", "p95 ms", "tokens", "cost $"], [h("tr", {},
          [m.execution_count, m.success_count, m.failure_count, (m.average_duration_ms ?? 0).toFixed(1),
            (m.p95_duration_ms ?? 0).toFixed(1), m.total_tokens, (m.total_cost_usd ?? 0).toFixed(4)].map((x) => h("td", {}, x ?? 0)))]),
        h("h3", {}, "Analysis"),
        h("p", {}, badge(agent.analysis?.state), ` quality ${(agent.analysis?.quality_score ?? 0).toFixed(2)}`),
        json(agent.analysis?.capabilities || agent.declared_capabilities),
        h("h3", {}, "Versions"),
        table(["version", "hash", "created"], body.versions.map((v) =>
          row(`#/agents/${encodeURIComponent(agentId)}/${encodeURIComponent(v.version)}`,
            [v.version, short(v.code_hash), when(v.create_time)], { version: v.version }))),
        h("h3", {}, "Lineage"), lineageSvg(body.lineage, agent),
        h("h3", {}, "Labels"), json(agent.labels))));
  return () => {};
}

// executions

async function executionsView() {
  const holder = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  put(main, h("h2", {}, "Executions"), holder);
  return poll(async () => {
    try {
      const body = await api("/api/executions");
      put(holder, (body.executions || []).length === 0 ? h("p", { class: "muted" }, "No executions yet.") :
        table(["execution", "workflow", "state", "nodes", "started"], body.executions.map((x) =>
          row(`#/executions/${encodeURIComponent(x.execution_id)}`, [x.execution_id, x.workflow_id, badge(x.state),
            `${x.nodes.filter((n) => n.state === "STATE_SUCCEEDED").length}/${x.nodes.length}`, when(x.start_time || x.create_time)],
          { execution: x.execution_id }))));
    } catch (error) { put(holder, failure(error)); }
  });
}

function dagSvg(layers, workflow, runs, onSelect) {
  const W = 170; const H = 46; const GX = 70; const GY = 26;
  const tallest = Math.max(1, ...layers.map((l) => l.length));
  const width = 20 + layers.length * (W + GX); const height = 20 + tallest * (H + GY);
  const svg = s("svg", { id: "dag", width, height, viewBox: `0 0 ${width} ${height}` });
  const pos = new Map();
  layers.forEach((layer, i) => layer.forEach((id, j) => {
    const offset = ((tallest - layer.length) * (H + GY)) / 2;
    pos.set(id, { x: 10 + i * (W + GX), y: 10 + offset + j * (H + GY) });
  }));
  for (const node of workflow.nodes || []) {
    for (const dep of node.depends_on || []) {
      const a = pos.get(dep); const b = pos.get(node.id);
      if (!a || !b) continue;
      const mx = (a.x + W + b.x) / 2;
      svg.append(s("path", { class: "edge", d: `M${a.x + W},${a.y + H / 2} C${mx},${a.y + H / 2} ${mx},${b.y + H / 2} ${b.x},${b.y + H / 2}` }));
    }
  }
  const labels = new Map();
  for (const [id, p] of pos) {
    const run = runs.get(id) || {};
    const state = s("text", { x: p.x + 10, y: p.y + 36, class: "muted" });
    const g = s("g", { class: "dag-node", dataset: { node: id }, onclick: () => onSelect(id) },
      s("rect", { x: p.x, y: p.y, width: W, height: H }), s("text", { x: p.x + 10, y: p.y + 18 }, id), state);
    labels.set(id, { g, state });
    svg.append(g);
    setNodeState(labels, id, run.state || "STATE_PENDING", run.attempt);
  }
  return { svg, labels };
}

function setNodeState(labels, id, state, attempt) {
  const label = labels.get(id);
  if (!label) return;
  label.g.setAttribute("class", `dag-node ${state}`);
  label.g.dataset.state = state;
  label.state.textContent = state.replace(/^STATE_/, "").toLowerCase() + (attempt > 1 ? ` · attempt ${attempt}` : "");
}

async function executionView(executionId) {
  let body = await api(`/api/executions/${encodeURIComponent(executionId)}`);
  let selected = null;
  const header = h("div", {});
  const details = h("div", { class: "panel", id: "node-details" }, h("p", { class: "muted" }, "Select a node."));
  const events = h("div", { class: "events panel", id: "events" });
  const outputs = h("div", {});
  const runsOf = () => new Map((body.execution.nodes || []).map((n) => [n.node_id, n]));
  const dag = dagSvg(body.layers, body.workflow, runsOf(), (id) => { selected = id; showNode(); });
  const showNode = () => {
    const run = runsOf().get(selected);
    if (!selected) return;
    const spec = (body.workflow.nodes || []).find((n) => n.id === selected) || {};
    put(details, h("h3", {}, selected), h("p", {}, badge(run?.state), ` attempt ${run?.attempt ?? 0}`,
      run?.duration_ms ? ` · ${run.duration_ms.toFixed(0)} ms` : ""),
    h("p", { class: "muted" }, `agent ${spec.agent_name || spec.agent_id || ""} ${run?.agent_version || spec.agent_version || ""}`),
    run?.error?.type ? h("div", {}, h("h3", { class: "error" }, `${run.error.type}: ${run.error.message}`), h("pre", {}, run.error.traceback || "")) : "",
    h("h3", {}, "Output"), json(run?.output), h("h3", {}, "Inputs"), json(spec.inputs));
  };
  const showHeader = () => {
    const x = body.execution;
    put(header, h("h2", {}, "Execution ", h("span", { id: "execution-id" }, x.execution_id), " ", h("span", { id: "execution-state" }, badge(x.state))),
      h("p", { class: "muted" }, `workflow ${body.workflow.name || ""} ${x.workflow_id} · started ${when(x.start_time)}`
        + (x.end_time ? ` · ended ${when(x.end_time)}` : "")),
      x.error?.message ? h("p", { class: "error" }, `${x.error.node_id ? x.error.node_id + ": " : ""}${x.error.type}: ${x.error.message}`) : "");
    put(outputs, h("h3", {}, "Outputs"), json(x.outputs));
  };
  const refresh = debounce(async () => {
    body = await api(`/api/executions/${encodeURIComponent(executionId)}`);
    for (const [id, run] of runsOf()) setNodeState(dag.labels, id, run.state, run.attempt);
    showHeader(); showNode();
  }, 150);
  showHeader();
  put(main, header, h("div", { class: "grid" }, h("div", {}, dag.svg, outputs), h("div", {}, details, h("h3", {}, "Events"), events)));
  return live(`/api/executions/${encodeURIComponent(executionId)}/events`, (event) => {
    events.prepend(eventLine(event));
    const state = NODE_STATE_OF_EVENT[event.type];
    if (state && event.node_id) setNodeState(dag.labels, event.node_id, state, event.attempt);
    refresh();
  }, refresh);
}

// builds

async function buildsView() {
  const holder = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  put(main, h("h2", {}, "Builds"), holder);
  return poll(async () => {
    try {
      const body = await api("/api/builds");
      put(holder, (body.builds || []).length === 0 ? h("p", { class: "muted" }, "No builds yet.") :
        table(["build", "requirements", "state", "stages", "created"], body.builds.map((b) =>
          row(`#/builds/${encodeURIComponent(b.build_id)}`, [b.build_id, b.requirements.slice(0, 80), badge(b.state),
            b.stages.length, when(b.create_time)], { build: b.build_id }))));
    } catch (error) { put(holder, failure(error)); }
  });
}

function timelineSvg(stages) {
  const total = Math.max(1, stages.reduce((sum, st) => sum + (st.duration_ms || 0), 0));
  const width = 900; const rowH = 30;
  const svg = s("svg", { id: "build-timeline", width, height: 20 + stages.length * rowH, viewBox: `0 0 ${width} ${20 + stages.length * rowH}` });
  let offset = 0;
  stages.forEach((st, i) => {
    const w = Math.max(4, ((st.duration_ms || 0) / total) * (width - 360));
    const name = st.stage.replace(/^STAGE_/, "").toLowerCase().replace("_", " ");
    svg.append(s("g", { class: "stage", dataset: { stage: st.stage, state: st.state } },
      s("text", { x: 8, y: 24 + i * rowH, class: "axis-label" }, `${name}${st.attempt > 1 ? ` (attempt ${st.attempt})` : ""}`),
      s("rect", { class: `stage-bar ${st.state}`, x: 160 + offset, y: 10 + i * rowH, width: w, height: 20 }),
      s("text", { x: 166 + offset + w, y: 24 + i * rowH, class: "axis-label" }, `${(st.duration_ms || 0).toFixed(0)} ms`)));
    offset += w;
  });
  return svg;
}

async function buildView(buildId) {
  const holder = h("div", {});
  const events = h("div", { class: "events panel", id: "events" });
  const render = async () => {
    const { build } = await api(`/api/builds/${encodeURIComponent(buildId)}`);
    const usage = build.usage || {};
    put(holder, h("h2", {}, "Build ", build.build_id, " ", badge(build.state)),
      h("p", {}, build.requirements),
      h("p", { class: "muted" }, `${usage.calls ?? 0} model calls · ${(usage.input_tokens ?? 0) + (usage.output_tokens ?? 0)} tokens · $${(usage.cost_usd ?? 0).toFixed(4)} · ${(build.elapsed_seconds ?? 0).toFixed(1)} s`),
      build.error?.message ? h("p", { class: "error" }, `${build.error.code}: ${build.error.message}`) : "",
      h("h3", {}, "Stages"), timelineSvg(build.stages || []),
      table(["stage", "state", "summary", "ms"], (build.stages || []).map((st) => h("tr", {},
        [st.stage.replace(/^STAGE_/, "").toLowerCase(), badge(st.state), st.summary, (st.duration_ms || 0).toFixed(0)].map((c) => h("td", {}, c))))),
      h("h3", {}, "Agents"), table(["spec", "agent", "version", "reused", "fix attempts"], (build.registered_agents || []).map((a) =>
        row(`#/agents/${encodeURIComponent(a.agent_id)}/${encodeURIComponent(a.version)}`, [a.spec_name, a.agent_id, a.version, a.reused ? "yes" : "no", a.fix_attempts]))),
      h("h3", {}, "Package"), json(build.package));
  };
  await render();
  put(main, holder, h("h3", {}, "Events"), events);
  const refresh = debounce(render, 150);
  return live(`/api/builds/${encodeURIComponent(buildId)}/events`, (event) => { events.prepend(eventLine(event)); refresh(); }, refresh);
}

// evolution

async function evolutionsView() {
  const holder = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  put(main, h("h2", {}, "Evolution runs"), holder);
  return poll(async () => {
    try {
      const body = await api("/api/evolutions");
      put(holder, (body.runs || []).length === 0 ? h("p", { class: "muted" }, "No evolution runs yet.") :
        table(["run", "agent", "state", "generations", "best", "created"], body.runs.map((r) =>
          row(`#/evolutions/${encodeURIComponent(r.run_id)}`, [r.run_id, `${r.agent_id} ${r.agent_version}`, badge(r.state),
            r.generations.length, (r.best?.fitness ?? 0).toFixed(3), when(r.create_time)], { run: r.run_id }))));
    } catch (error) { put(holder, failure(error)); }
  });
}

function fitnessChart(reports, seedFitness) {
  const width = 620; const height = 260; const L = 46; const B = 30; const T = 14; const R = 14;
  const n = Math.max(1, reports.length);
  const values = reports.flatMap((r) => [r.best_fitness, r.mean_fitness]).concat([seedFitness || 0]);
  const lo = Math.min(0, ...values); const hi = Math.max(1e-9, ...values);
  const x = (i) => L + (n === 1 ? (width - L - R) / 2 : (i * (width - L - R)) / (n - 1));
  const y = (v) => height - B - ((v - lo) / (hi - lo || 1)) * (height - B - T);
  const svg = s("svg", { id: "fitness-chart", width, height, viewBox: `0 0 ${width} ${height}` },
    s("line", { class: "axis", x1: L, y1: height - B, x2: width - R, y2: height - B }),
    s("line", { class: "axis", x1: L, y1: T, x2: L, y2: height - B }),
    s("text", { class: "axis-label", x: 4, y: y(hi) + 4 }, hi.toFixed(2)),
    s("text", { class: "axis-label", x: 4, y: y(lo) + 4 }, lo.toFixed(2)),
    s("text", { class: "axis-label", x: L + 8, y: 11 }, "green: best · blue: mean"));
  for (const [key, cls] of [["best_fitness", "best"], ["mean_fitness", "mean"]]) {
    if (reports.length > 1) svg.append(s("polyline", { class: `line-${cls}`, points: reports.map((r, i) => `${x(i)},${y(r[key])}`).join(" ") }));
    reports.forEach((r, i) => svg.append(s("circle", { class: `point-${cls}`, cx: x(i), cy: y(r[key]), r: 4, dataset: { generation: r.generation } },
      s("title", {}, `generation ${r.generation}: ${cls} ${r[key].toFixed(4)}`))));
  }
  reports.forEach((r, i) => svg.append(s("text", { class: "axis-label", x: x(i) - 3, y: height - 12 }, r.generation)));
  return svg;
}

// Columns by generation; in each column children sit near the mean height of their parents, so the edges of a
// family stay short. Every edge is a real parent -> child link from ListCandidates.
function evolutionLineageSvg(lineage, selected, onSelect) {
  const COL = 120; const ROW = 30; const TOP = 24; const LEFT = 40;
  const byGeneration = new Map();
  for (const node of lineage.nodes) {
    const list = byGeneration.get(node.generation) || []; list.push(node); byGeneration.set(node.generation, list);
  }
  const generations = [...byGeneration.keys()].sort((a, b) => a - b);
  const pos = new Map();
  generations.forEach((g, column) => {
    const list = byGeneration.get(g);
    const wanted = (node) => {
      const ys = (node.parents || []).map((p) => pos.get(p)?.y).filter((y) => y !== undefined);
      return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : 0;
    };
    list.sort((a, b) => wanted(a) - wanted(b) || (b.fitness ?? 0) - (a.fitness ?? 0));
    list.forEach((node, row) => pos.set(node.code_hash, { x: LEFT + column * COL, y: TOP + row * ROW }));
  });
  const width = LEFT * 2 + Math.max(0, generations.length - 1) * COL + 60;
  const height = TOP * 2 + Math.max(1, ...[...byGeneration.values()].map((l) => l.length)) * ROW;
  const onPath = new Set(lineage.nodes.filter((n) => n.on_best_path).map((n) => n.code_hash));
  const svg = s("svg", { id: "lineage", width, height, viewBox: `0 0 ${width} ${height}` });
  generations.forEach((g, column) => svg.append(s("text", { class: "axis-label", x: LEFT + column * COL - 8, y: 12 }, `gen ${g}`)));
  for (const e of lineage.edges) {
    const a = pos.get(e.from); const b = pos.get(e.to);
    if (!a || !b) continue;
    const bend = (b.x - a.x) / 2;
    svg.append(s("path", { class: `edge parent${onPath.has(e.from) && onPath.has(e.to) ? " best-path" : ""}`,
      d: `M${a.x},${a.y} C${a.x + bend},${a.y} ${b.x - bend},${b.y} ${b.x},${b.y}`, dataset: { from: e.from, to: e.to } }));
  }
  for (const node of lineage.nodes) {
    const p = pos.get(node.code_hash);
    const classes = ["lineage-node", node.role, node.on_best_path ? "on-best-path" : "", node.code_hash === selected ? "selected" : ""];
    svg.append(s("g", { class: classes.filter(Boolean).join(" "), dataset: { hash: node.code_hash, generation: node.generation },
      onclick: () => onSelect(node.code_hash) },
      s("circle", { cx: p.x, cy: p.y, r: 8 }),
      s("text", { x: p.x + 11, y: p.y + 4 }, typeof node.fitness === "number" ? node.fitness.toFixed(3) : "?"),
      s("title", {}, `${node.code_hash}\ngeneration ${node.generation}${node.operator ? `\noperator ${node.operator}` : ""}`
        + `${node.role === "unlisted" ? "\nnot listed by the service" : ""}`)));
  }
  return svg;
}

function candidateDetails(lineage, hash) {
  const node = lineage.nodes.find((n) => n.code_hash === hash);
  if (!node) return h("p", { class: "muted" }, "Select a candidate in the tree.");
  const facts = `${node.role ? node.role + " · " : ""}generation ${node.generation}`
    + `${node.operator ? " · " + node.operator : ""}${typeof node.fitness === "number" ? " · fitness " + node.fitness.toFixed(4) : ""}`;
  const head = h("p", { id: "candidate-facts" }, h("code", {}, short(node.code_hash)), " ", facts);
  if (node.role === "unlisted") return h("div", {}, head, h("p", { class: "muted" }, "This parent is not among the listed candidates."));
  if (!node.parents || node.parents.length === 0) return h("div", {}, head, h("p", { class: "muted" }, "The starting program: it has no parent."));
  const parents = h("p", { class: "muted" }, "parents: ", node.parents.map((p, i) =>
    h("a", { href: "#", onclick: (event) => { event.preventDefault(); lineage.select(p); } }, `${i ? ", " : ""}${short(p)}`)),
  node.parents.length > 1 ? " (diff against the first, the program the operator edited)" : "");
  return h("div", {}, head, parents, node.diff ? diffView(node.diff) : h("p", { class: "muted" }, "The parent is not listed, so there is no diff."));
}

async function evolutionView(runId) {
  const holder = h("div", {});
  const events = h("div", { class: "events panel", id: "events" });
  let selected = null;
  let lineage = null;
  const tree = h("div", { class: "lineage-scroll" });
  const details = h("div", { id: "candidate-diff" });
  const select = (hash) => {
    selected = hash;
    put(tree, evolutionLineageSvg(lineage, selected, select));
    put(details, candidateDetails(lineage, selected));
  };
  const render = async () => {
    const body = await api(`/api/evolutions/${encodeURIComponent(runId)}`);
    const run = body.run; const p = run.promotion || {};
    lineage = { ...body.lineage, select };
    if (!selected || !lineage.nodes.some((n) => n.code_hash === selected)) selected = lineage.best || lineage.seed;
    put(tree, evolutionLineageSvg(lineage, selected, select));
    put(details, candidateDetails(lineage, selected));
    const counted = `${lineage.nodes.filter((n) => n.role !== "unlisted").length} candidates`
      + (lineage.complete ? "" : " (the first ones only: the run has more)");
    put(holder, h("h2", {}, "Evolution ", run.run_id, " ", h("span", { id: "run-state" }, badge(run.state))),
      h("p", { class: "muted" }, `agent ${body.seed.name} ${body.seed.version} · seed fitness ${(run.seed_fitness ?? 0).toFixed(3)}`
        + ` · stop ${(run.stop_reason || "").replace(/^STOP_REASON_/, "").toLowerCase()} ${run.stop_message || ""}`),
      run.error ? h("p", { class: "error" }, run.error) : "",
      h("div", { class: "grid" },
        h("div", {}, h("h3", {}, "Fitness per generation"), fitnessChart(run.generations || [], run.seed_fitness),
          h("h3", {}, "Lineage"), tree,
          h("p", { class: "muted", id: "lineage-legend" }, `${counted} · an edge joins a parent to its child · green: the best and its ancestors · click a candidate for its diff against its parent`)),
        h("div", {}, h("h3", {}, "Promotion"),
          h("p", { id: "promotion" }, p.reason ? `${p.promoted ? "promoted" : "not promoted"}: ${p.reason}` : "not decided yet"),
          p.promoted ? h("p", {}, link(`#/agents/${encodeURIComponent(p.agent_id)}/${encodeURIComponent(p.version)}`, `${p.agent_id} ${p.version}`),
            ` · held-out ${(p.baseline_held_out_fitness ?? 0).toFixed(3)} → ${(p.best_held_out_fitness ?? 0).toFixed(3)}`) : "",
          h("h3", {}, "Candidate: diff against its parent"), details,
          h("h3", {}, "Code diff: seed → best"),
          body.diff ? h("div", { id: "seed-best-diff" }, diffView(body.diff.lines)) : h("p", { class: "muted" }, "no best candidate yet"),
          h("h3", {}, "Generations"), table(["gen", "best", "mean", "diversity", "evals", "cost $"], (run.generations || []).map((r) => h("tr", {},
            [r.generation, r.best_fitness.toFixed(3), r.mean_fitness.toFixed(3), r.diversity.toFixed(2), r.evaluations, r.cost_usd.toFixed(4)].map((c) => h("td", {}, c))))))));
  };
  await render();
  put(main, holder, h("h3", {}, "Events"), events);
  const refresh = debounce(render, 150);
  return live(`/api/evolutions/${encodeURIComponent(runId)}/events`, (event) => { events.prepend(eventLine(event)); refresh(); }, refresh);
}

// router

const ROUTES = [
  [/^#\/agents\/([^/]+)(?:\/([^/]+))?$/, (m) => agentView(decodeURIComponent(m[1]), m[2] && decodeURIComponent(m[2])), "agents"],
  [/^#\/executions\/([^/]+)$/, (m) => executionView(decodeURIComponent(m[1])), "executions"],
  [/^#\/executions$/, () => executionsView(), "executions"],
  [/^#\/builds\/([^/]+)$/, (m) => buildView(decodeURIComponent(m[1])), "builds"],
  [/^#\/builds$/, () => buildsView(), "builds"],
  [/^#\/evolutions\/([^/]+)$/, (m) => evolutionView(decodeURIComponent(m[1])), "evolutions"],
  [/^#\/evolutions$/, () => evolutionsView(), "evolutions"],
  [/^#\/agents$|^#?\/?$/, () => agentsView(), "agents"],
];

async function route() {
  cleanup();
  cleanup = () => {};
  const hash = window.location.hash || "#/agents";
  for (const [pattern, view, section] of ROUTES) {
    const m = hash.match(pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.view === section);
    put(main, h("p", { class: "muted" }, "Loading…"));
    try { cleanup = (await view(m)) || (() => {}); } catch (error) { put(main, failure(error)); }
    return;
  }
  put(main, h("p", {}, "Unknown page. ", link("#/agents", "Agents")));
}

window.addEventListener("hashchange", route);
route();
