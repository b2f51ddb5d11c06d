// Previewed values as readable DOM. Run records keep state values previewed (mnemoflow.graphs.preview): plain JSON in
// which markers stand for what was left out:
//   {"$vector": n}                 a vector of n numbers
//   {"$text": head, "$chars": n}   a long string: its head, and its full length
//   [..., {"$more": n}]            a long list: its first items, then how many more there were
//   {..., "$more": n}              a dict with many keys: its first keys, then how many more
//   {"$deep": type}                a value nested too deep to keep
//   {"$omitted": n}                a value left out whole (its JSON was n characters long)
// Strings show as text (long ones folded with their length), containers as a compact tree that folds what is big.
// Everything is built with textContent (format.js el): stored text never becomes markup.
import { el } from "./format.js";

const INLINE_CHARS = 80; // a container of plain values whose JSON is at most this long shows on one line
const SHORT_TEXT = 160; // longer strings fold behind their first words
const HEAD_CHARS = 80; // how much of a folded string its summary shows
const OPEN_ENTRIES = 8; // a container with at most this many entries starts open (unless nested deep)

const count = new Intl.NumberFormat("en");

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function hasOnly(value, keys) {
  const own = Object.keys(value);
  return own.length === keys.length && keys.every((key) => own.includes(key));
}

// The marker `value` is, if it is one: {kind: "vector"|"text"|"deep"|"omitted", ...}; else null.
export function markerOf(value) {
  if (!isObject(value)) return null;
  if (hasOnly(value, ["$vector"])) return { kind: "vector", size: value.$vector };
  if (hasOnly(value, ["$text", "$chars"])) return { kind: "text", head: String(value.$text), chars: value.$chars };
  if (hasOnly(value, ["$deep"])) return { kind: "deep", type: String(value.$deep) };
  if (hasOnly(value, ["$omitted"])) return { kind: "omitted", length: value.$omitted };
  return null;
}

function isMoreItem(item) {
  return isObject(item) && hasOnly(item, ["$more"]) && typeof item.$more === "number";
}

// A list's kept items and how many were left out after them.
function listParts(list) {
  if (list.length && isMoreItem(list[list.length - 1])) return { items: list.slice(0, -1), more: list[list.length - 1].$more };
  return { items: list, more: 0 };
}

// A dict's kept entries and how many keys were left out.
function dictParts(dict) {
  const entries = Object.entries(dict).filter(([key]) => key !== "$more");
  return { entries, more: typeof dict.$more === "number" ? dict.$more : 0 };
}

function plural(n, one, many) {
  return `${count.format(n)} ${n === 1 ? one : many}`;
}

function isLongText(text) {
  return text.length > SHORT_TEXT || text.split("\n").length > 4;
}

// A one-line description of a previewed value: "vector of 384 numbers", "list of 12 items", "text of 2,048 chars"...
export function describe(value) {
  const marker = markerOf(value);
  if (marker?.kind === "vector") return `vector of ${plural(marker.size, "number", "numbers")}`;
  if (marker?.kind === "text") return `text of ${plural(marker.chars, "char", "chars")}`;
  if (marker?.kind === "deep") return `${marker.type} (nested too deep to keep)`;
  if (marker?.kind === "omitted") return `value left out (${plural(marker.length, "character", "characters")} of JSON)`;
  if (Array.isArray(value)) {
    const { items, more } = listParts(value);
    return `list of ${plural(items.length + more, "item", "items")}`;
  }
  if (isObject(value)) {
    const { entries, more } = dictParts(value);
    return plural(entries.length + more, "field", "fields");
  }
  if (typeof value === "string") return isLongText(value) ? `text of ${plural(value.length, "char", "chars")}` : JSON.stringify(value);
  return JSON.stringify(value);
}

function isPlain(value) {
  return value === null || ["number", "boolean"].includes(typeof value) || (typeof value === "string" && !isLongText(value));
}

function foldedText(head, shown, total) {
  const box = el("details", null, "value-text");
  const summary = el("summary");
  const first = head.replace(/\s+/g, " ").trim();
  summary.append(
    el("span", first.length > HEAD_CHARS ? `${first.slice(0, HEAD_CHARS - 1)}…` : first, "value-string"),
    el("span", ` (${plural(total, "char", "chars")})`, "muted small"),
  );
  box.append(summary, el("pre", shown, "value-pre"));
  if (total > shown.length) box.append(el("p", `… ${plural(total - shown.length, "more char", "more chars")} not kept in the trace`, "muted small"));
  return box;
}

// Text as a readable block: a string, or a {"$text", "$chars"} marker (its head, folded, with its full length).
export function renderText(value) {
  const marker = markerOf(value);
  if (marker?.kind === "text") return foldedText(marker.head, marker.head, Number(marker.chars) || marker.head.length);
  if (typeof value === "string") {
    if (value.length > SHORT_TEXT * 4) return foldedText(value, value, value.length);
    return el("pre", value, "value-pre");
  }
  return renderValue(value);
}

function renderScalar(value) {
  if (value === null || value === undefined) return el("span", "null", "value-null");
  if (typeof value === "boolean") return el("span", String(value), "value-bool");
  if (typeof value === "number") return el("span", String(value), "value-number");
  const text = String(value);
  if (!text) return el("span", "(empty text)", "value-null");
  if (isLongText(text)) return foldedText(text, text, text.length);
  return el("span", text, "value-string");
}

function renderMarker(marker) {
  if (marker.kind === "text") return foldedText(marker.head, marker.head, Number(marker.chars) || marker.head.length);
  const text = describe(marker.kind === "vector" ? { $vector: marker.size } : marker.kind === "deep" ? { $deep: marker.type } : { $omitted: marker.length });
  return el("span", text, "value-marker");
}

function folder(value, depth, size, body) {
  const box = el("details", null, "value-folder");
  box.open = size <= OPEN_ENTRIES && depth < 2;
  box.append(el("summary", describe(value), "value-summary"), body);
  return box;
}

function moreNote(more, one, many) {
  return el("span", `… ${plural(more, one, many)} not kept in the trace`, "muted small");
}

// A previewed value as DOM: scalars and short strings inline, long text folded, markers described, lists and dicts
// as a tree whose big or deep branches start folded.
export function renderValue(value, depth = 0) {
  const marker = markerOf(value);
  if (marker) return renderMarker(marker);
  if (Array.isArray(value)) {
    const { items, more } = listParts(value);
    if (!items.length && !more) return el("span", "[] (empty list)", "value-null");
    if (!more && items.every(isPlain) && JSON.stringify(items).length <= INLINE_CHARS) {
      return el("code", `[${items.map((item) => JSON.stringify(item)).join(", ")}]`, "value-inline");
    }
    const list = el("ol", null, "value-list");
    list.start = 0;
    for (const item of items) {
      const entry = el("li");
      entry.append(renderValue(item, depth + 1));
      list.append(entry);
    }
    if (more) {
      const entry = el("li", null, "value-more");
      entry.append(moreNote(more, "more item", "more items"));
      list.append(entry);
    }
    return folder(value, depth, items.length + more, list);
  }
  if (isObject(value)) {
    const { entries, more } = dictParts(value);
    if (!entries.length && !more) return el("span", "{} (no fields)", "value-null");
    if (!more && entries.every(([, item]) => isPlain(item)) && JSON.stringify(value).length <= INLINE_CHARS) {
      return el("code", `{${entries.map(([key, item]) => `${key}: ${JSON.stringify(item)}`).join(", ")}}`, "value-inline");
    }
    return folder(value, depth, entries.length + more, renderEntries(entries, more, depth + 1));
  }
  return renderScalar(value);
}

function renderEntries(entries, more, depth) {
  const list = el("dl", null, "value-dict");
  for (const [key, item] of entries) {
    const term = el("dt");
    term.append(el("code", key, "field"));
    const definition = el("dd");
    definition.append(renderValue(item, depth));
    list.append(term, definition);
  }
  if (more) {
    const definition = el("dd", null, "value-more");
    definition.append(moreNote(more, "more field", "more fields"));
    list.append(el("dt", "…"), definition);
  }
  return list;
}

// A dict of named values (a run's input or outputs) as a list of fields, each value rendered by renderValue; any
// other value (a marker, say) is rendered as it is.
export function renderFields(fields) {
  if (!isObject(fields) || markerOf(fields)) return renderValue(fields);
  const { entries, more } = dictParts(fields);
  if (!entries.length && !more) return el("p", "No fields.", "muted");
  return renderEntries(entries, more, 1);
}
