// Formatting shared by the pages' scripts (the same as the server's Jinja filters).

export function when(epoch) {
  if (typeof epoch !== "number") return "-";
  return new Date(epoch * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

export function seconds(value) {
  if (typeof value !== "number") return "-";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

// A DOM element with text content (never markup) and optional class.
export function el(tag, text, className) {
  const element = document.createElement(tag);
  if (text !== undefined && text !== null) element.textContent = String(text);
  if (className) element.className = className;
  return element;
}
