// Draw a Mermaid diagram offline, with the library served from /vendor (installed by `make ui`).
import mermaid from "../vendor/mermaid/mermaid.esm.min.mjs";

mermaid.initialize({
  startOnLoad: false,
  securityLevel: "strict",
  theme: "neutral",
  flowchart: { useMaxWidth: true },
});

let counter = 0;

// Render `text` into `container`, replacing what it held. Mermaid's output is sanitized (securityLevel strict);
// it is parsed into an inert document and moved in as nodes, never assigned as markup.
export async function renderDiagram(container, text) {
  counter += 1;
  try {
    const { svg } = await mermaid.render(`mf-diagram-${counter}`, text);
    const parsed = new DOMParser().parseFromString(svg, "text/html");
    const element = parsed.body.querySelector("svg");
    if (!element) throw new Error("mermaid returned no SVG");
    container.replaceChildren(document.importNode(element, true));
    container.dataset.rendered = String(counter);
  } catch (error) {
    const message = document.createElement("p");
    message.className = "error-message";
    message.textContent = `The diagram could not be drawn: ${error && error.message ? error.message : error}`;
    container.replaceChildren(message);
  }
}

// Render every `.diagram` whose source is the hidden <pre> named by its data-diagram-for.
export async function renderAll() {
  for (const container of document.querySelectorAll(".diagram[data-diagram-for]")) {
    const source = document.getElementById(container.dataset.diagramFor);
    if (source) await renderDiagram(container, source.textContent);
  }
}
