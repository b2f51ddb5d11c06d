// The run page: draw the diagram with the visited nodes marked; while the run is live, poll its API every
// second and redraw the steps, the figures, the error and the diagram, stopping once the run has ended.
import { renderAll, renderDiagram } from "./diagram.js";
import { el, seconds, when } from "./format.js";

const root = document.getElementById("run");
const POLL_MS = 1000;
let lastMermaid = document.getElementById("diagram-source")?.textContent ?? null;

function usage(llm) {
  const get = (key) => (llm && typeof llm[key] === "number" ? llm[key] : 0);
  return `${get("calls")} calls, ${get("tokens")} tokens (${get("prompt_tokens")} prompt, ${get("completion_tokens")} completion)`;
}

function renderSteps(events, status) {
  const body = document.getElementById("steps-body");
  const rows = events.map((event, index) => {
    const row = el("tr", null, `event-${event.event}`);
    const llm = event.llm ? `${event.llm.calls ?? 0} calls, ${event.llm.tokens ?? 0} tokens` : "";
    row.append(
      el("td", index + 1, "num"),
      el("td", event.node),
      el("td", event.event),
      el("td", when(event.started_at)),
      el("td", seconds(event.duration_s), "num"),
      el("td", llm),
      el("td", event.error ?? "", "error-message"),
    );
    return row;
  });
  if (!rows.length) {
    const row = el("tr");
    const empty = status === "failed" ? "No steps: the run failed before its first one." : "No steps yet.";
    const cell = el("td", empty, "muted");
    cell.colSpan = 7;
    row.append(cell);
    rows.push(row);
  }
  body.replaceChildren(...rows);
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
  renderSteps(run.events, run.status);
  document.getElementById("run-error-text").textContent = run.error ?? "";
  document.getElementById("run-error").hidden = !run.error;
  const container = document.getElementById("diagram");
  if (container && run.mermaid && run.mermaid !== lastMermaid) {
    lastMermaid = run.mermaid;
    await renderDiagram(container, run.mermaid);
  }
}

async function poll() {
  const url = `/api/runs/${encodeURIComponent(root.dataset.runId)}?namespace=${encodeURIComponent(root.dataset.namespace)}`;
  try {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (response.ok) {
      const run = await response.json();
      await update(run);
      if (!run.live) return;
    } else if (response.status < 500) {
      return; // gone or not allowed: nothing more to show
    }
  } catch (error) {
    // the server may be restarting: keep trying
  }
  setTimeout(poll, POLL_MS);
}

await renderAll();
if (root.dataset.live === "true") setTimeout(poll, POLL_MS);
