// DOM helpers. Service data is untrusted (agent code, outputs, error messages): it only ever becomes text
// nodes or attribute values set through the DOM, never markup (no innerHTML anywhere in the console).

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: h("td", {class: "x"}, "text", otherNode). Strings become text nodes. */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, same contract as h(). */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces the children of a node. */
export function put(node, ...children) {
  node.replaceChildren();
  return fill(node, {}, children);
}

/** A JSON value pretty-printed into a <pre> as text. */
export function json(value) {
  return h("pre", {}, JSON.stringify(value ?? null, null, 2));
}

export function badge(state) {
  return h("span", { class: `badge ${state || ""}` }, (state || "").replace(/^STATE_/, "").toLowerCase());
}

export function when(value) {
  return value ? new Date(value).toLocaleString() : "";
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

/** GET a console API path; non-2xx becomes ApiError (401 sends the page to the login form). */
export async function api(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (response.status === 401) { window.location.assign("/login"); }
  if (!response.ok) throw new ApiError(response.status, body?.code || response.status, body?.message || "");
  return body;
}

/** Opens a server-sent event stream; returns a function that closes it. */
export function live(path, onEvent, onEnd) {
  const source = new EventSource(path);
  const indicator = document.getElementById("live");
  indicator.textContent = "● live";
  source.addEventListener("event", (message) => onEvent(JSON.parse(message.data)));
  const finish = (message) => {
    source.close();
    indicator.textContent = "";
    if (onEnd) onEnd(message.data ? JSON.parse(message.data) : {});
  };
  source.addEventListener("end", finish);
  source.addEventListener("failure", finish);
  return () => { source.close(); indicator.textContent = ""; };
}

/** A diff (list of unified-diff lines) as coloured text. */
export function diffView(lines) {
  if (!lines || lines.length === 0) return h("p", { class: "muted" }, "no change in code");
  return h("pre", { class: "diff" }, lines.map((line) => {
    const kind = line.startsWith("@@") ? "hunk" : line.startsWith("+") && !line.startsWith("+++") ? "add"
      : line.startsWith("-") && !line.startsWith("---") ? "del" : "";
    return h("span", { class: kind }, line + "\n");
  }));
}

export function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}
