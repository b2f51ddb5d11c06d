// The run page's actions: "Resume" for a run that stopped part-way (failed, stalled, interrupted), and a fork panel that
// lists the thread's checkpoints, edits the chosen one's fields as JSON and forks it into a new thread. Both open the
// new run's page; a refusal (409: nothing left to run; 422: a bad edit) is shown where it applies. The buttons follow
// the run's status as the live page updates it.
import { el } from "./format.js";
import { FieldErrors, parseJSON, postJSON, refusalText } from "./start.js";

const RESUMABLE = new Set(["failed", "stalled", "interrupted"]);

const root = document.getElementById("run-actions");
const resumeButton = document.getElementById("resume-button");
const forkPanel = document.getElementById("fork-panel");
const forkForm = document.getElementById("fork-form");
const actionsError = document.getElementById("actions-error");
const runId = root?.dataset.runId;
const namespace = root?.dataset.namespace;

function showFor(status) {
  root.dataset.status = status;
  resumeButton.hidden = !RESUMABLE.has(status);
  forkPanel.hidden = status === "running";
}

function followStatus() {
  const status = document.getElementById("run-status");
  if (!status) return;
  new MutationObserver(() => showFor(status.textContent.trim())).observe(status, {
    childList: true,
    characterData: true,
    subtree: true,
  });
}

async function resume() {
  actionsError.hidden = true;
  resumeButton.disabled = true;
  const { status, data } = await postJSON(`/api/runs/${encodeURIComponent(runId)}/resume`, { namespace });
  if (status === 202 && data.url) {
    window.location.assign(data.url);
    return;
  }
  resumeButton.disabled = false;
  actionsError.textContent = refusalText(status, data);
  actionsError.hidden = false;
}

function checkpointLabel(checkpoint) {
  const after = checkpoint.after.length ? checkpoint.after.join(", ") : "?";
  const next = checkpoint.next.length ? `, then ${[...new Set(checkpoint.next)].join(", ")}` : ", the end";
  const why = checkpoint.forkable ? "" : checkpoint.next.length ? " (the run's input: fork the step after it)" : " (nothing runs after it)";
  return `step ${checkpoint.step}: after ${after}${next}${why}`;
}

// The chosen checkpoint's fields: a JSON text area per editable one, prefilled; the others named.
function renderFields(container, checkpoint, errors) {
  container.replaceChildren();
  const rows = [];
  for (const [name, value] of Object.entries(checkpoint.editable)) {
    const id = `fork-field-${name}`;
    const row = el("div", null, "field-row field-json");
    row.dataset.field = name;
    const label = el("label");
    label.htmlFor = id;
    label.append(el("span", name, "field-name"), el("span", "JSON", "field-type"));
    const original = JSON.stringify(value, null, 1);
    const area = el("textarea", null, "json");
    area.id = id;
    area.name = name;
    area.value = original;
    area.rows = Math.min(Math.max(original.split("\n").length, 1), 8);
    area.spellcheck = false;
    const message = el("p", null, "field-error");
    message.id = `${id}-error`;
    message.hidden = true;
    area.setAttribute("aria-describedby", message.id);
    errors.add(name, message);
    row.append(label, area, message);
    container.append(row);
    rows.push({ name, area, original: JSON.stringify(value) });
  }
  const large = Object.keys(checkpoint.values).filter((name) => !(name in checkpoint.editable));
  if (large.length) container.append(el("p", `Too large to edit here: ${large.join(", ")}.`, "muted small"));
  if (!rows.length) container.append(el("p", "No fields to edit at this checkpoint: a fork runs its next steps again.", "muted small"));
  return rows;
}

async function loadFork() {
  const response = await fetch(
    `/api/runs/${encodeURIComponent(runId)}/checkpoints?${new URLSearchParams({ namespace })}`,
    { headers: { Accept: "application/json" } },
  );
  let data;
  try {
    data = await response.json();
  } catch {
    data = { error: `the server answered ${response.status}` };
  }
  if (!response.ok) {
    forkForm.replaceChildren(el("p", refusalText(response.status, data), "error-message"));
    return;
  }
  const checkpoints = data;
  if (!checkpoints.some((checkpoint) => checkpoint.forkable)) {
    forkForm.replaceChildren(el("p", "This thread has no checkpoint to fork: no step saved one, or none has a step after it.", "muted"));
    return;
  }
  const summary = el("p", null, "error-message");
  summary.id = "fork-error";
  summary.setAttribute("role", "alert");
  summary.hidden = true;
  const choose = el("div", null, "field-row");
  const label = el("label", "Checkpoint");
  label.htmlFor = "fork-checkpoint";
  const select = el("select");
  select.id = "fork-checkpoint";
  for (const checkpoint of checkpoints) {
    const option = el("option", checkpointLabel(checkpoint));
    option.value = checkpoint.checkpoint_id;
    option.disabled = !checkpoint.forkable;
    select.append(option);
  }
  select.value = checkpoints.filter((checkpoint) => checkpoint.forkable).at(-1).checkpoint_id;
  const checkpointError = el("p", null, "field-error");
  checkpointError.hidden = true;
  choose.append(label, select, checkpointError);
  const fields = el("div", null, "fork-fields");
  fields.id = "fork-fields";
  const submit = el("button", "Fork and run");
  submit.type = "submit";
  submit.id = "fork-submit";
  forkForm.replaceChildren(summary, choose, fields, submit);

  let errors;
  let rows;
  const render = () => {
    errors = new FieldErrors(summary);
    errors.add("checkpoint_id", checkpointError);
    const checkpoint = checkpoints.find((item) => item.checkpoint_id === select.value);
    rows = renderFields(fields, checkpoint, errors);
  };
  render();
  select.addEventListener("change", () => {
    errors.clear();
    render();
  });
  forkForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    const edits = {};
    const bad = {};
    for (const row of rows) {
      let value;
      try {
        value = parseJSON(row.area.value);
      } catch (error) {
        bad[row.name] = error.message;
        continue;
      }
      if (JSON.stringify(value) !== row.original) edits[row.name] = value;
    }
    if (Object.keys(bad).length) {
      errors.show("Some fields are not valid JSON.", bad);
      return;
    }
    submit.disabled = true;
    const body = { namespace, checkpoint_id: select.value, edits };
    const { status, data: answer } = await postJSON(`/api/runs/${encodeURIComponent(runId)}/fork`, body);
    if (status === 202 && answer.url) {
      window.location.assign(answer.url);
      return;
    }
    submit.disabled = false;
    errors.show(refusalText(status, answer), answer.fields);
  });
}

if (root && runId) {
  resumeButton.addEventListener("click", resume);
  let loaded = false;
  forkPanel.addEventListener("toggle", () => {
    if (forkPanel.open && !loaded) {
      loaded = true;
      loadFork();
    }
  });
  followStatus();
}
