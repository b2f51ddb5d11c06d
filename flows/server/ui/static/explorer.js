// The memory explorer: a record's neighbourhood as an interactive graph (cytoscape), loaded one page at a time.
// Clicking a node shows its properties and loads its first page of neighbours; "More" loads the next page of the
// selected node. Nothing is ever loaded whole: every fetch is one page of /api/memory/neighbours.
import cytoscape from "../vendor/cytoscape/cytoscape.esm.min.mjs";

const root = document.getElementById("explorer");
const namespace = root.dataset.namespace;
const pageSize = Number(root.dataset.page) || 25;
const records = new Map(); // id -> record JSON
const pages = new Map(); // id -> {next: offset of the next page, total}
let selected = root.dataset.id;

const PALETTE = ["#0f766e", "#1d4ed8", "#b45309", "#7c3aed", "#be123c", "#15803d", "#0369a1", "#a16207"];
function colour(kind) {
  let hash = 0;
  for (const character of kind) hash = (hash * 31 + character.charCodeAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

function label(record) {
  const text = (record.text || "").replace(/\s+/g, " ").trim();
  const short = text.length > 28 ? `${text.slice(0, 27)}…` : text;
  return short ? `${record.kind}: ${short}` : `${record.kind} ${record.id.slice(0, 8)}`;
}

const cy = cytoscape({
  container: document.getElementById("cy"),
  wheelSensitivity: 0.3,
  minZoom: 0.2,
  maxZoom: 3,
  style: [
    {
      selector: "node",
      style: {
        "background-color": "data(colour)",
        label: "",
        "font-size": 10,
        color: "#1f2933",
        "text-valign": "bottom",
        "text-margin-y": 3,
        "text-wrap": "ellipsis",
        "text-max-width": "120px",
        width: 18,
        height: 18,
      },
    },
    { selector: "node.expanded", style: { "border-width": 2, "border-color": "#102a43" } },
    { selector: "node.labelled, node.expanded, node:selected", style: { label: "data(label)", "text-background-color": "#fbfcfd", "text-background-opacity": 0.85, "text-background-padding": "2px" } },
    { selector: "node.centre", style: { width: 28, height: 28, "font-weight": "bold" } },
    { selector: "node:selected", style: { "border-width": 4, "border-color": "#f59e0b" } },
    {
      selector: "edge",
      style: {
        width: 1.2,
        "line-color": "#9fb3c8",
        "target-arrow-color": "#9fb3c8",
        "target-arrow-shape": "triangle",
        "curve-style": "bezier",
        label: "",
        "font-size": 8,
        color: "#616e7c",
        "text-rotation": "autorotate",
      },
    },
    { selector: "edge.near", style: { label: "data(type)", "line-color": "#486581", "target-arrow-color": "#486581", width: 2 } },
  ],
});

function addRecord(record) {
  records.set(record.id, record);
  if (cy.getElementById(record.id).nonempty()) return false;
  cy.add({ group: "nodes", data: { id: record.id, label: label(record), colour: colour(record.kind) } });
  return true;
}

function addRelationship(relationship) {
  if (cy.getElementById(`r-${relationship.id}`).nonempty()) return false;
  cy.add({
    group: "edges",
    data: { id: `r-${relationship.id}`, source: relationship.source_id, target: relationship.target_id, type: relationship.type },
  });
  return true;
}

function layout() {
  cy.layout({ name: "cose", animate: false, randomize: false, fit: true, padding: 30, nodeRepulsion: () => 60000, idealEdgeLength: () => 90, componentSpacing: 60 }).run();
}

// Label every node while the graph is small; past that, only the expanded and selected ones (and hovered).
function labels() {
  cy.nodes().toggleClass("labelled", cy.nodes().length <= 20);
  cy.edges().removeClass("near");
  cy.getElementById(selected).connectedEdges().addClass("near");
}

function showCount() {
  document.getElementById("explorer-count").textContent =
    `${cy.nodes().length} nodes, ${cy.edges().length} relationships shown`;
  root.dataset.nodes = String(cy.nodes().length);
}

function showMore() {
  const button = document.getElementById("explorer-more");
  const page = pages.get(selected);
  if (page && page.next < page.total) {
    button.hidden = false;
    button.textContent = `More (${page.next} of ${page.total} loaded)`;
  } else {
    button.hidden = true;
  }
}

function showProperties(id) {
  const record = records.get(id);
  if (!record) return;
  const set = (element, text) => { document.getElementById(element).textContent = text ?? ""; };
  set("prop-kind", record.kind);
  set("prop-id", record.id);
  set("prop-created", record.created_at);
  set("prop-updated", record.updated_at);
  set("prop-text", record.text);
  set("prop-properties", JSON.stringify(record.properties ?? {}, null, 2));
  const page = pages.get(id);
  set("prop-links", page ? `${page.total} relationships (${Math.min(page.next, page.total)} loaded)` : "not loaded yet");
  document.getElementById("prop-open").href =
    `/memory/record?namespace=${encodeURIComponent(namespace)}&id=${encodeURIComponent(record.id)}`;
  root.dataset.selected = id;
}

// Load the next page of `id`'s relationships and add what is new; returns how many nodes were added.
async function loadPage(id) {
  const page = pages.get(id) ?? { next: 0, total: Infinity };
  if (page.next >= page.total) return 0;
  const url = `/api/memory/neighbours?namespace=${encodeURIComponent(namespace)}&id=${encodeURIComponent(id)}` +
    `&limit=${pageSize}&offset=${page.next}`;
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    document.getElementById("explorer-count").textContent = `Could not load neighbours: ${body.error ?? response.status}`;
    return 0;
  }
  const data = await response.json();
  let added = addRecord(data.node) ? 1 : 0;
  for (const record of data.nodes) if (addRecord(record)) added += 1;
  for (const relationship of data.relationships) addRelationship(relationship);
  pages.set(id, { next: data.offset + data.relationships.length, total: data.total });
  cy.getElementById(id).addClass("expanded");
  if (added) layout();
  labels();
  showCount();
  return added;
}

async function select(id) {
  selected = id;
  cy.nodes().unselect();
  cy.getElementById(id).select();
  showProperties(id);
  if (!pages.has(id)) await loadPage(id);
  showProperties(id);
  labels();
  showMore();
}

async function more() {
  await loadPage(selected);
  showProperties(selected);
  showMore();
}

cy.on("tap", "node", (event) => { select(event.target.id()); });
cy.on("mouseover", "node", (event) => { event.target.addClass("labelled"); });
cy.on("mouseout", "node", (event) => { if (cy.nodes().length > 20) event.target.removeClass("labelled"); });
document.getElementById("explorer-more").addEventListener("click", () => { more(); });
document.getElementById("explorer-fit").addEventListener("click", () => { cy.fit(undefined, 30); });

window.mnemoflowExplorer = { cy, select, more, loadPage, nodeCount: () => cy.nodes().length };

await loadPage(root.dataset.id);
cy.getElementById(root.dataset.id).addClass("centre");
await select(root.dataset.id);
root.dataset.ready = "true";
