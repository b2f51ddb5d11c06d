// The graph page's start form, built from /api/graphs/NAME/form: a field per state field (declared inputs first, the
// others folded), the namespace and an optional thread. Submitting posts JSON to /api/graphs/NAME/runs and opens the
// run's page; a refusal shows each field's message beside it and the summary above the form. Also exports what the run
// page's actions (run_actions.js) share with it: posting JSON and showing a refusal's messages.
import { el } from "./format.js";

// POST `body` as JSON to `url`: {status, data} (data is the parsed answer, or {error} when it was not JSON).
export async function postJSON(url, body) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (error) {
    return { status: 0, data: { error: `the server did not answer: ${error.message}` } };
  }
  let data;
  try {
    data = await response.json();
  } catch {
    data = { error: `the server answered ${response.status} ${response.statusText}` };
  }
  return { status: response.status, data };
}

// A refusal's general message: FastAPI's own 422s put a list in `detail`, ours say `error`.
export function refusalText(status, data) {
  if (data && typeof data.error === "string") return data.error;
  if (data && Array.isArray(data.detail)) return data.detail.map((item) => item.msg).join("; ");
  return `the server answered ${status}`;
}

// Messages beside fields: `slots` maps a field name to the element that shows its message.
export class FieldErrors {
  constructor(summary) {
    this.summary = summary;
    this.slots = new Map();
  }

  add(name, slot) {
    this.slots.set(name, slot);
  }

  clear() {
    this.summary.hidden = true;
    this.summary.textContent = "";
    for (const slot of this.slots.values()) {
      slot.hidden = true;
      slot.textContent = "";
    }
  }

  // Show `error` above and each of `fields` beside its field; a field with no slot is named in the summary.
  show(error, fields = {}) {
    const unplaced = [];
    for (const [name, message] of Object.entries(fields || {})) {
      const slot = this.slots.get(name);
      if (slot) {
        slot.textContent = message;
        slot.hidden = false;
        const folded = slot.closest("details");
        if (folded) folded.open = true; // a message on a folded field must be seen
      } else {
        unplaced.push(`${name}: ${message}`);
      }
    }
    this.summary.textContent = [error, ...unplaced].filter(Boolean).join("\n");
    this.summary.hidden = !this.summary.textContent;
    const first = [...this.slots.values()].find((slot) => !slot.hidden);
    (first || this.summary).scrollIntoView({ block: "center" });
  }
}

// A JSON text area's value, or throws with a message that says where the JSON breaks.
export function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`not JSON: ${error.message}`);
  }
}

const TYPE_NOTES = { string: "one line", text: "text", integer: "integer", number: "number", boolean: "yes or no", json: "JSON" };

function control(field, id) {
  let input;
  if (field.type === "text" || field.type === "json") {
    input = el("textarea", null, field.type === "json" ? "json" : "");
    input.rows = field.type === "json" ? 3 : 4;
    input.spellcheck = field.type === "text";
    if (field.default !== null && field.default !== undefined) {
      input.value = field.type === "json" ? JSON.stringify(field.default, null, 1) : String(field.default);
    }
  } else {
    input = el("input");
    if (field.type === "boolean") {
      input.type = "checkbox";
      input.checked = field.default === true;
    } else if (field.type === "integer" || field.type === "number") {
      input.type = "number";
      input.step = field.type === "integer" ? "1" : "any";
      if (typeof field.default === "number") input.value = String(field.default);
    } else {
      input.type = "text";
      if (typeof field.default === "string") input.value = field.default;
    }
  }
  input.id = id;
  input.name = field.name;
  if (field.required) input.required = true;
  return input;
}

// One field: its label (name, required mark, type), description, control and message slot.
function fieldRow(field, errors) {
  const id = `start-field-${field.name}`;
  const row = el("div", null, `field-row field-${field.type}`);
  row.dataset.field = field.name;
  const label = el("label");
  label.htmlFor = id;
  label.append(el("span", field.name, "field-name"));
  if (field.required) {
    const mark = el("span", "*", "required-mark");
    mark.title = "required";
    label.append(mark);
  }
  label.append(el("span", TYPE_NOTES[field.type] || field.type, "field-type"));
  const input = control(field, id);
  const message = el("p", null, "field-error");
  message.id = `${id}-error`;
  message.hidden = true;
  input.setAttribute("aria-describedby", message.id);
  errors.add(field.name, message);
  row.append(label);
  if (field.description) row.append(el("p", field.description, "field-description"));
  row.append(input, message);
  return { row, input };
}

// The value a control holds: {skip: true} when it says nothing (an empty number or text), else {value}.
function valueOf(field, input) {
  if (field.type === "boolean") return { value: input.checked };
  if (field.type === "json") return input.value.trim() ? { value: parseJSON(input.value) } : { skip: true };
  if (field.type === "integer" || field.type === "number") {
    return input.value === "" ? { skip: true } : { value: Number(input.value) };
  }
  return input.value === "" ? { skip: true } : { value: input.value };
}

function sameValue(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function buildForm(form, spec, errors) {
  form.replaceChildren();
  const controls = [];
  const inputs = spec.fields.filter((field) => field.input);
  const others = spec.fields.filter((field) => !field.input);
  for (const field of inputs) {
    const { row, input } = fieldRow(field, errors);
    form.append(row);
    controls.push({ field, input });
  }
  if (others.length) {
    const more = el("details", null, "more-fields");
    more.append(el("summary", `Other state fields (${others.length}, optional: sent only when changed)`));
    for (const field of others) {
      const { row, input } = fieldRow(field, errors);
      more.append(row);
      controls.push({ field, input });
    }
    form.append(more);
  }
  const where = el("div", null, "start-where-fields");
  const namespace = fieldRow(
    { name: "namespace", type: "string", required: true, default: spec.namespace, description: "Where the run's memory and record go." },
    errors,
  );
  const thread = fieldRow(
    { name: "thread_id", type: "string", required: false, default: "", description: "Optional: continue a thread's state; a new thread when empty." },
    errors,
  );
  where.append(namespace.row, thread.row);
  const submit = el("button", "Start run");
  submit.type = "submit";
  submit.id = "start-submit";
  form.append(where, submit);
  return { controls, namespace: namespace.input, thread: thread.input, submit };
}

async function setUp(form) {
  const name = form.dataset.graph;
  const summary = document.getElementById("start-error");
  const errors = new FieldErrors(summary);
  const response = await fetch(`/api/graphs/${encodeURIComponent(name)}/form`, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    form.replaceChildren(el("p", `The form did not load (${response.status}).`, "error-message"));
    return;
  }
  const spec = await response.json();
  const built = buildForm(form, spec, errors);
  if (spec.prefect) {
    const where = document.getElementById("start-where");
    where.textContent = `Prefect is set up and this graph is deployed: a start creates a flow run of run_graph/${name}, and opens its thread's runs.`;
    where.hidden = false;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    const input = {};
    const bad = {};
    for (const { field, input: control } of built.controls) {
      let read;
      try {
        read = valueOf(field, control);
      } catch (error) {
        bad[field.name] = error.message;
        continue;
      }
      if (read.skip) continue;
      if (!field.input && sameValue(read.value, field.default)) continue;
      input[field.name] = read.value;
    }
    if (Object.keys(bad).length) {
      errors.show("Some fields are not valid JSON.", bad);
      return;
    }
    const body = { input, namespace: built.namespace.value.trim() || spec.namespace };
    if (built.thread.value.trim()) body.thread_id = built.thread.value.trim();
    built.submit.disabled = true;
    built.submit.textContent = "Starting…";
    const { status, data } = await postJSON(`/api/graphs/${encodeURIComponent(name)}/runs`, body);
    if (status === 202 && data.url) {
      window.location.assign(data.url);
      return;
    }
    built.submit.disabled = false;
    built.submit.textContent = "Start run";
    errors.show(refusalText(status, data), data.fields);
  });
}

const startForm = document.getElementById("start-form");
if (startForm) setUp(startForm);
