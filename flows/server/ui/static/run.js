// The run page: draw the diagram with the visited nodes marked; load the run once and show its input, outputs and
// steps, each step opening (on demand, so a long run stays fast) to the fields it wrote, as before and after, and
// its model calls with their prompts and replies. While the run is live, poll its API every second: new steps are
// appended, rows already shown stay as they are (and open if they were), and the figures, error, outputs, links
// and diagram are refreshed; polling stops once the run has ended.
import { renderAll, renderDiagram } from "./diagram.js";
import { el, seconds, when } from "./format.js";
import { describe, markerOf, renderFields, renderText, renderValue } from "./values.js";

const root = document.getElementById("run");
const POLL_MS = 1000;
const COLUMNS = 8;
const API = `/api/runs/${encodeURIComponent(root.dataset.runId)}?namespace=${encodeURIComponent(root.dataset.namespace)}`;
let lastMermaid = document.getElementById("diagram-source")?.textContent ?? null;

const steps = {
  events: [], // the events shown, by index
  rows: [], // per shown event: {key, row, detail}
  open: new Set(), // indexes of the steps the user opened
  rendered: false, // whether the server's rows were replaced
};
const shown = { input: undefined, outputs: undefined, links: undefined };

const number = new Intl.NumberFormat("en");

function usage(llm) {
  const get = (key) => (llm && typeof llm[key] === "number" ? llm[key] : 0);
  return `${get("calls")} calls, ${get("tokens")} tokens (${get("prompt_tokens")} prompt, ${get("completion_tokens")} completion)`;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function badge(text, kind, title) {
  const element = el("span", text, `badge badge-${kind}`);
  if (title) element.title = title;
  return element;
}

// -- a step's detail: what it wrote, its model calls --------------------------------------------------------------

function hasWrites(event) {
  return isObject(event.writes) && Object.keys(event.writes).length > 0;
}

// The fields a step wrote as a table of before and after; a merged field's after is what the step added to it.
function renderWrites(writes) {
  if (markerOf(writes)) return renderValue(writes);
  const table = el("table", null, "diff");
  const head = el("tr");
  head.append(el("th", "Field"), el("th", "Before"), el("th", "After"));
  table.append(el("thead"), el("tbody"));
  table.tHead.append(head);
  for (const [field, change] of Object.entries(writes)) {
    if (field === "$more") continue;
    const row = el("tr");
    const name = el("td", null, "diff-field");
    name.append(el("code", field, "field"));
    row.append(name);
    if (!isObject(change) || !("after" in change)) {
      const cell = el("td");
      cell.colSpan = 2;
      cell.append(renderValue(change, 1));
      row.append(cell);
    } else if (change.unchanged) {
      name.append(" ", badge("unchanged", "unchanged", "The step wrote the value the field already held."));
      const cell = el("td", null, "diff-same");
      cell.colSpan = 2;
      cell.append(renderValue(change.after, 1));
      row.append(cell);
    } else {
      const before = el("td", null, "diff-before");
      before.append(renderValue(change.before, 1));
      const after = el("td", null, "diff-after");
      if (change.merged) {
        name.append(" ", badge("merged", "merged", "The field merges what steps write (a reducer): after is what this step added."));
        after.append(el("span", "added: ", "muted small"));
      }
      after.append(renderValue(change.after, 1));
      row.append(before, after);
    }
    table.tBodies[0].append(row);
  }
  if (typeof writes.$more === "number") {
    const row = el("tr");
    const cell = el("td", `… ${number.format(writes.$more)} more fields not kept in the trace`, "muted small");
    cell.colSpan = 3;
    row.append(cell);
    table.tBodies[0].append(row);
  }
  return table;
}

function callFacts(call) {
  const facts = [];
  const tokens = (value) => (typeof value === "number" ? number.format(value) : "?");
  facts.push(`${tokens(call.prompt_tokens)} → ${tokens(call.completion_tokens)} tokens`);
  if (typeof call.seconds === "number") facts.push(seconds(call.seconds));
  if (typeof call.requests === "number" && call.requests !== 1) facts.push(`${call.requests} requests`);
  if (call.retries) facts.push(`${call.retries} ${call.retries === 1 ? "retry" : "retries"}`);
  if (call.reasks) facts.push(`${call.reasks} ${call.reasks === 1 ? "re-ask" : "re-asks"}`);
  return facts.join(" · ");
}

// A text the trace cut (its full length given beside it) as a text marker, so that it shows folded with that length.
function cutText(text, chars) {
  return typeof text === "string" && typeof chars === "number" && chars > text.length ? { $text: text, $chars: chars } : text;
}

// One model call: what it was (kind, schema or tool), its figures, and, opened, its prompt by role and its reply.
function renderCall(call, index) {
  const box = el("details", null, `call${call.error ? " call-failed" : ""}`);
  const summary = el("summary", null, "call-summary");
  summary.append(el("span", `#${index + 1}`, "muted"), " ", el("span", call.kind ?? "call", "call-kind"));
  if (call.name) summary.append(" ", el("code", call.name, "call-name"));
  summary.append(" ", el("span", callFacts(call), "call-facts"));
  if (call.cache_hit) summary.append(" ", badge("cache hit", "cache", "Answered from the response cache: no request was sent."));
  if (call.error) summary.append(" ", badge("error", "error"));
  box.append(summary);

  const body = el("div", null, "call-body");
  body.append(el("h4", "Prompt"));
  const messages = Array.isArray(call.messages) ? call.messages : [];
  messages.forEach((message, position) => {
    const role = String(message?.role ?? "message");
    const item = el("div", null, `message role-${role.replace(/[^a-z]/g, "")}`);
    item.append(el("span", role, "role"), renderText(cutText(message?.content ?? "", message?.chars)));
    body.append(item);
    if (position === 0 && typeof call.messages_omitted === "number" && call.messages_omitted > 0) {
      body.append(el("p", `… ${number.format(call.messages_omitted)} messages left out of the trace`, "muted small"));
    }
  });
  if (!messages.length) body.append(el("p", "No messages kept.", "muted"));
  body.append(el("h4", "Reply"));
  if (call.reply !== undefined && call.reply !== null && call.reply !== "") body.append(renderText(cutText(call.reply, call.reply_chars)));
  else body.append(el("p", call.error ? "No reply: the call failed." : "No reply kept.", "muted"));
  if (call.error) {
    body.append(el("h4", "Error"), el("pre", String(call.error), "error-message"));
  }
  box.append(body);
  return box;
}

function stepDetail(event) {
  const body = el("div", null, "step-detail-body");
  if (event.error) body.append(el("h3", "Error"), el("pre", event.error, "error-message"));
  if (hasWrites(event)) body.append(el("h3", "Wrote"), renderWrites(event.writes));
  else if (event.event === "end") body.append(el("p", "Wrote no state fields.", "muted small"));
  const calls = Array.isArray(event.calls) ? event.calls : [];
  if (calls.length) {
    body.append(el("h3", `Model calls (${calls.length})`));
    const list = el("div", null, "calls");
    calls.forEach((call, index) => list.append(renderCall(call, index)));
    body.append(list);
  }
  if (event.calls_omitted) {
    body.append(el("p", `${number.format(event.calls_omitted)} more model calls of this step are not kept in detail (a run keeps a bounded number).`, "muted small"));
  }
  return body;
}

// -- the steps table ----------------------------------------------------------------------------------------------

function expandable(event) {
  return Boolean(hasWrites(event) || event.error || (Array.isArray(event.calls) && event.calls.length) || event.calls_omitted);
}

function eventKey(event) {
  return JSON.stringify([event.node, event.event, event.started_at]);
}

function wroteCell(event) {
  const cell = el("td", null, "wrote");
  if (!hasWrites(event)) return cell;
  if (markerOf(event.writes)) {
    cell.append(el("span", describe(event.writes), "muted small"));
    return cell;
  }
  for (const field of Object.keys(event.writes)) {
    if (!field.startsWith("$")) cell.append(el("code", field, "field"), " ");
  }
  return cell;
}

function stepRow(event, index) {
  const position = index + 1;
  const row = el("tr", null, `step event-${event.event}`);
  row.id = `step-${position}`;
  const first = el("td", null, "num step-number");
  if (expandable(event)) {
    const button = el("button", null, "toggle");
    button.type = "button";
    button.setAttribute("aria-expanded", "false");
    button.setAttribute("aria-controls", `step-detail-${position}`);
    button.title = "Show what this step wrote and its model calls";
    button.append(el("span", null, "toggle-mark"), String(position));
    button.addEventListener("click", () => setOpen(index, !steps.open.has(index)));
    first.append(button);
  } else {
    first.textContent = String(position);
  }
  const llm = event.llm ? `${event.llm.calls ?? 0} calls, ${event.llm.tokens ?? 0} tokens` : "";
  row.append(
    first,
    el("td", event.node),
    el("td", event.event),
    el("td", when(event.started_at)),
    el("td", seconds(event.duration_s), "num"),
    wroteCell(event),
    el("td", llm),
    el("td", event.error ?? "", "error-message step-error"),
  );
  return row;
}

function detailRow(event, index) {
  const row = el("tr", null, "step-detail");
  row.id = `step-detail-${index + 1}`;
  const cell = el("td");
  cell.colSpan = COLUMNS;
  cell.append(stepDetail(event));
  row.append(cell);
  return row;
}

function setOpen(index, open) {
  const entry = steps.rows[index];
  if (!entry || !expandable(steps.events[index])) return;
  if (open && !entry.detail) {
    entry.detail = detailRow(steps.events[index], index);
    entry.row.after(entry.detail);
    steps.open.add(index);
  } else if (!open && entry.detail) {
    entry.detail.remove();
    entry.detail = null;
    steps.open.delete(index);
  }
  entry.row.querySelector(".toggle")?.setAttribute("aria-expanded", open ? "true" : "false");
}

function emptyRow(status) {
  const row = el("tr", null, "steps-empty");
  const cell = el("td", status === "failed" ? "No steps: the run failed before its first one." : "No steps yet.", "muted");
  cell.colSpan = COLUMNS;
  row.append(cell);
  return row;
}

// Show `events`: rows already shown for the same events stay (open or not); changed ones are rebuilt, new ones added.
function renderSteps(events, status) {
  const body = document.getElementById("steps-body");
  if (!steps.rendered) {
    body.replaceChildren();
    steps.rendered = true;
  }
  body.querySelector(".steps-empty")?.remove();
  for (let index = steps.rows.length - 1; index >= events.length; index -= 1) {
    const entry = steps.rows.pop();
    entry.row.remove();
    entry.detail?.remove();
    steps.open.delete(index);
  }
  events.forEach((event, index) => {
    const key = eventKey(event);
    const entry = steps.rows[index];
    if (entry && entry.key === key) return;
    const row = stepRow(event, index);
    if (entry) {
      entry.row.replaceWith(row);
      entry.detail?.remove();
    } else {
      body.append(row);
    }
    steps.rows[index] = { key, row, detail: null };
    steps.events[index] = event;
    if (steps.open.has(index)) {
      steps.open.delete(index);
      setOpen(index, true);
    }
  });
  steps.events.length = events.length;
  if (!events.length) body.append(emptyRow(status));
}

function openFromHash() {
  const match = /^#step-(\d+)$/.exec(window.location.hash);
  if (!match) return;
  const index = Number(match[1]) - 1;
  setOpen(index, true);
  steps.rows[index]?.row.scrollIntoView({ block: "start" });
}

// -- the rest of the page -----------------------------------------------------------------------------------------

function renderBox(id, value, note) {
  const key = JSON.stringify([value, note]);
  if (shown[id] === key) return;
  shown[id] = key;
  const box = document.getElementById(id === "input" ? "run-input" : "run-outputs");
  box.replaceChildren(note ? el("p", note, "muted") : renderFields(value));
}

function renderLinks(links) {
  const key = JSON.stringify(links ?? []);
  if (shown.links === key) return;
  shown.links = key;
  const items = (links ?? []).map((link) => {
    const item = el("li");
    const anchor = el("a", link.label);
    anchor.href = link.url;
    item.append(anchor);
    return item;
  });
  document.getElementById("run-links-list").replaceChildren(...items);
  document.getElementById("run-links").hidden = !items.length;
}

function renderError(run) {
  document.getElementById("run-error-text").textContent = run.error ?? "";
  document.getElementById("run-error").hidden = !run.error;
  const where = document.getElementById("run-error-step");
  where.replaceChildren();
  if (run.failed_step) {
    const anchor = el("a", `${run.failed_step.index}, ${run.failed_step.node}`);
    anchor.href = `#step-${run.failed_step.index}`;
    where.append(" in step ", anchor);
  }
}

async function update(run) {
  const status = document.getElementById("run-status");
  status.textContent = run.status;
  status.className = `status status-${run.status}`;
  document.getElementById("run-duration").textContent = seconds(run.duration_s);
  document.getElementById("run-steps").textContent = String(run.steps);
  document.getElementById("run-llm").textContent = usage(run.llm);
  document.getElementById("live-note").hidden = !run.live;
  root.dataset.live = run.live ? "true" : "false";
  root.dataset.status = run.status;
  renderSteps(run.events, run.status);
  renderError(run);
  renderBox("input", run.input, run.input_note);
  renderBox("outputs", run.outputs, run.outputs_note);
  renderLinks(run.links);
  const container = document.getElementById("diagram");
  if (container && run.mermaid && run.mermaid !== lastMermaid) {
    lastMermaid = run.mermaid;
    await renderDiagram(container, run.mermaid);
  }
}

// Fetch the run and show it; true when it should be fetched again (it is live, or the server could not answer).
async function refresh() {
  try {
    const response = await fetch(API, { headers: { Accept: "application/json" } });
    if (response.ok) {
      const run = await response.json();
      await update(run);
      return run.live;
    }
    return response.status >= 500; // gone or not allowed: nothing more to show
  } catch (error) {
    return true; // the server may be restarting: keep trying
  }
}

async function poll() {
  if (await refresh()) setTimeout(poll, POLL_MS);
}

document.addEventListener("click", (event) => {
  const anchor = event.target instanceof Element ? event.target.closest('a[href^="#step-"]') : null;
  if (anchor && anchor.getAttribute("href") === window.location.hash) openFromHash();
});
window.addEventListener("hashchange", openFromHash);

const drawing = renderAll();
const again = await refresh();
root.dataset.ready = "true";
openFromHash();
if (again) setTimeout(poll, POLL_MS);
await drawing;
