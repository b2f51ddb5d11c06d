// The memory pages' script. On every page it colours the kind swatches (the legend of /memory, the kinds of its
// tables) with the colour each kind gets in the explorer. On a record's page it runs the explorer: the record's
// neighbourhood as an interactive graph (cytoscape), loaded one page at a time, with a legend of the kinds shown.
// Clicking a node shows its properties and loads its first page of neighbours; "More" loads the next page of the
// selected node. Nothing is ever loaded whole: every fetch is one page of /api/memory/neighbours.
import { el } from "./format.js";

// Distinct on white and under white label backgrounds.
const PALETTE = [
  "#0f766e", "#1d4ed8", "#b45309", "#7c3aed", "#be123c", "#15803d",
  "#0369a1", "#a16207", "#c026d3", "#4d7c0f", "#9f1239", "#475569",
];

// The namespace's kinds and their counts, when the page names them (an element with data-kind-counts, {kind: count}:
// the legend of /memory; a record's page may give them on its #explorer, and the explorer's legend then shows them).
const namespaceCounts = (() => {
  try {
    return JSON.parse(document.querySelector("[data-kind-counts]")?.dataset.kindCounts || "{}");
  } catch {
    return {};
  }
})();

function hashSlot(kind) {
  let hash = 0;
  for (const character of kind) hash = (hash * 31 + character.charCodeAt(0)) >>> 0;
  return hash % PALETTE.length;
}

// A kind's colour is the palette entry its name hashes to, the same on every page. Where the page names the
// namespace's kinds, those that hash to an entry taken by a kind before them (in name order) take the next free
// ones, so that a namespace's kinds (up to 12) never share a colour.
const namespaceColours = new Map();
for (const kind of Object.keys(namespaceCounts).sort()) {
  const taken = new Set(namespaceColours.values());
  let slot = hashSlot(kind);
  for (let tries = 1; taken.has(PALETTE[slot]) && tries < PALETTE.length; tries += 1) slot = (slot + 1) % PALETTE.length;
  namespaceColours.set(kind, PALETTE[slot]);
}

function kindColour(kind) {
  return namespaceColours.get(kind) ?? PALETTE[hashSlot(kind)];
}

function paintSwatches(scope) {
  for (const swatch of scope.querySelectorAll(".kind-swatch[data-kind]")) {
    swatch.style.backgroundColor = kindColour(swatch.dataset.kind);
  }
}

const LABEL_CHARS = 32;

function shortLabel(record) {
  const text = (record.text || "").replace(/\s+/g, " ").trim();
  if (!text) return `${record.kind} ${record.id.slice(0, 8)}`;
  return text.length > LABEL_CHARS ? `${text.slice(0, LABEL_CHARS - 1)}…` : text;
}

// Labels sit below their node on a background that hides the edges behind them, and show once the zoom makes them
// readable. The lead nodes' labels (the centre, the expanded, the selected and the pointed-at ones) and the labels
// of the selected node's edges (along the edge, on a background too) keep one size on screen whatever the zoom.
const LABEL_BOX = {
  "text-background-color": "#ffffff",
  "text-background-opacity": 0.92,
  "text-background-shape": "roundrectangle",
};
const LEAD_LABELS = "node.centre, node.expanded, node:selected, node.hovered, edge.named, edge.hovered";
const NAMED_EDGES_UP_TO = 12; // the selected node's relationships are named along their edges up to this many

const STYLE = [
  {
    selector: "node",
    style: {
      "background-color": "data(colour)",
      label: "data(label)",
      "font-size": 9,
      color: "#243b53",
      "text-valign": "bottom",
      "text-halign": "center",
      "text-margin-y": 3,
      "text-wrap": "wrap",
      "text-max-width": "80px",
      "text-background-padding": "2px",
      "min-zoomed-font-size": 7,
      "z-index": 10,
      width: 16,
      height: 16,
      ...LABEL_BOX,
    },
  },
  { selector: "node.expanded", style: { "border-width": 2, "border-color": "#102a43", "z-index": 15 } },
  { selector: "node.centre", style: { width: 26, height: 26, "font-weight": "bold" } },
  { selector: "node:selected", style: { "border-width": 4, "border-color": "#f59e0b", "z-index": 20 } },
  { selector: "node.hovered", style: { label: "data(full)", "z-index": 30 } },
  { selector: "node.faded", style: { opacity: 0.2 } },
  {
    selector: "edge",
    style: {
      width: 1.2,
      "line-color": "#bcccdc",
      "target-arrow-color": "#bcccdc",
      "target-arrow-shape": "triangle",
      "arrow-scale": 0.8,
      "curve-style": "bezier",
      label: "",
      color: "#334e68",
      "text-rotation": "autorotate",
      "z-index": 1,
      ...LABEL_BOX,
    },
  },
  { selector: "edge.near", style: { "line-color": "#627d98", "target-arrow-color": "#627d98", width: 1.6, "z-index": 5 } },
  { selector: "edge.named", style: { label: "data(type)" } },
  { selector: "edge.hovered", style: { label: "data(type)", "line-color": "#486581", "target-arrow-color": "#486581", "z-index": 6 } },
  { selector: "edge.faded", style: { opacity: 0.15 } },
];

// The stylesheet at a zoom: the lead labels sized in the graph's units to show 10px on screen (edges' 9px).
function styleAt(zoom) {
  const lead = {
    "font-size": 10 / zoom,
    "text-max-width": `${150 / zoom}px`,
    "text-margin-y": 3 / zoom,
    "text-background-padding": `${2 / zoom}px`,
    "min-zoomed-font-size": 0,
  };
  return [...STYLE, { selector: LEAD_LABELS, style: lead }, { selector: "edge.named, edge.hovered", style: { "font-size": 9 / zoom } }];
}

// A radial layout around the page's record: each hop from it on rings of its own, ellipses shaped like the canvas.
// Lengths along a ring are counted in label boxes (a node with its label below: LABEL_W across, LABEL_H down), so
// that a ring holds as many nodes as fit side by side and rings lie a box apart: labels do not cover one another.
// A node sits as near as its ring allows to the place of the node it was reached from, so a neighbourhood stays
// together; a hop with more nodes than a ring holds spreads over several rings, interleaved so each ring goes round.
const LABEL_W = 90;
const LABEL_H = 44;
const RING_GAP = 100; // graph units between rings, across
const RING_SAMPLES = 720;

function ellipseRing(index, aspect) {
  const rx = RING_GAP * (index + 1.5);
  const ry = Math.max(RING_GAP / aspect, LABEL_H * 1.15) * (index + 1.5);
  const points = [];
  const lengths = [0];
  for (let step = 0; step <= RING_SAMPLES; step += 1) {
    const angle = -Math.PI / 2 + (2 * Math.PI * step) / RING_SAMPLES;
    points.push({ x: rx * Math.cos(angle), y: ry * Math.sin(angle) });
    if (step) {
      const [from, to] = [points[step - 1], points[step]];
      lengths.push(lengths[step - 1] + Math.max(Math.abs(to.x - from.x) / LABEL_W, Math.abs(to.y - from.y) / LABEL_H));
    }
  }
  const perimeter = lengths[RING_SAMPLES];
  return {
    capacity: Math.max(1, Math.floor(perimeter)),
    nodes: [],
    // the point at `fraction` (0 to 1, from the top, clockwise) of the ring's length
    at(fraction) {
      const wanted = (((fraction % 1) + 1) % 1) * perimeter;
      let step = 1;
      while (step < RING_SAMPLES && lengths[step] < wanted) step += 1;
      const share = (wanted - lengths[step - 1]) / Math.max(lengths[step] - lengths[step - 1], 1e-9);
      const [from, to] = [points[step - 1], points[step]];
      return { x: from.x + share * (to.x - from.x), y: from.y + share * (to.y - from.y) };
    },
  };
}

// Places (fractions of a ring, 0 to 1) for `wanted` (sorted) on a ring of `capacity` slots, each as near its wish as
// the slots allow.
function spread(wanted, capacity) {
  const step = 1 / Math.max(capacity, wanted.length);
  if (wanted.length * step > 0.9) return wanted.map((_, index) => wanted[0] + index * step);
  const placed = [];
  for (const fraction of wanted) placed.push(placed.length ? Math.max(fraction, placed[placed.length - 1] + step) : fraction);
  const overflow = placed[placed.length - 1] - (placed[0] + 1 - step);
  return overflow > 0 ? placed.map((fraction, index) => fraction - (overflow * index) / Math.max(placed.length - 1, 1)) : placed;
}

function radialPositions(cy, rootId, aspect) {
  const positions = new Map([[rootId, { x: 0, y: 0 }]]);
  const places = new Map([[rootId, 0]]);
  const seen = new Set([rootId]);
  let hop = [rootId];
  let rings = 0;
  while (hop.length) {
    // the next hop, each node wishing for the place of the node it was reached from (siblings in id order)
    const next = [];
    for (const id of hop) {
      const children = cy.getElementById(id).neighborhood("node").map((node) => node.id()).filter((child) => !seen.has(child)).sort();
      for (const child of children) {
        seen.add(child);
        next.push({ id: child, wish: places.get(id) });
      }
    }
    if (!next.length) break;
    if (hop[0] === rootId) next.forEach((node, index) => { node.wish = index / next.length; });
    next.sort((a, b) => a.wish - b.wish || (a.id < b.id ? -1 : 1));
    // enough rings for the hop, then each node to the ring whose share of the hop it is furthest behind on
    const hopRings = [];
    for (let room = 0; room < next.length; rings += 1) {
      hopRings.push(ellipseRing(rings, aspect));
      room += hopRings[hopRings.length - 1].capacity;
    }
    const behind = (ring) => (ring.nodes.length + 0.5) / ring.capacity;
    for (const node of next) hopRings.reduce((best, ring) => (behind(ring) < behind(best) ? ring : best)).nodes.push(node);
    for (const ring of hopRings) {
      const placed = spread(ring.nodes.map((node) => node.wish), ring.capacity);
      ring.nodes.forEach((node, index) => {
        places.set(node.id, placed[index]);
        positions.set(node.id, ring.at(placed[index]));
      });
    }
    hop = next.map((node) => node.id);
  }
  cy.nodes().forEach((node) => { // not connected to the record (cannot happen with neighbour pages): beside it
    if (!positions.has(node.id())) positions.set(node.id(), { x: RING_GAP * (rings + 2), y: 0 });
  });
  return positions;
}

async function explore(root) {
  const { default: cytoscape } = await import("../vendor/cytoscape/cytoscape.esm.min.mjs");
  const namespace = root.dataset.namespace;
  const pageSize = Number(root.dataset.page) || 25;
  const records = new Map(); // id -> record JSON
  const pages = new Map(); // id -> {next: offset of the next page, total}
  let selected = root.dataset.id;

  const canvas = document.getElementById("cy");
  const cy = cytoscape({ container: canvas, wheelSensitivity: 0.3, minZoom: 0.2, maxZoom: 3, style: styleAt(1) });
  const scaleLeadLabels = () => { cy.style().fromJson(styleAt(cy.zoom())).update(); };
  cy.on("zoom", scaleLeadLabels);
  const legend = el("ul", null, "legend");
  legend.id = "explorer-legend";
  legend.setAttribute("aria-label", "Kinds shown, with their colours");
  canvas.after(legend);

  function addRecord(record) {
    records.set(record.id, record);
    if (cy.getElementById(record.id).nonempty()) return false;
    const label = shortLabel(record);
    cy.add({
      group: "nodes",
      data: { id: record.id, kind: record.kind, label, full: `${record.kind}: ${label}`, colour: kindColour(record.kind) },
    });
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
    const aspect = Math.min(Math.max(cy.width() / Math.max(cy.height(), 1), 1), 2);
    const positions = radialPositions(cy, root.dataset.id, aspect);
    cy.layout({ name: "preset", positions: (node) => positions.get(node.id()), fit: true, padding: 30, animate: false }).run();
    scaleLeadLabels();
  }

  // The selected node's relationships stand out; they are named along the edge while there are few of them.
  function labels() {
    cy.edges().removeClass("near named");
    const near = cy.getElementById(selected).connectedEdges();
    near.addClass("near");
    if (near.length <= NAMED_EDGES_UP_TO) near.addClass("named");
  }

  // One entry per kind shown, most nodes first: its colour, its name and how many of its nodes are shown.
  // Pointing at an entry fades the other kinds' nodes.
  function showLegend() {
    const counts = new Map();
    cy.nodes().forEach((node) => { counts.set(node.data("kind"), (counts.get(node.data("kind")) ?? 0) + 1); });
    const kinds = [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    legend.replaceChildren(...kinds.map(([kind, count]) => {
      const item = el("li", null, "legend-item");
      item.dataset.kind = kind;
      item.dataset.count = String(count);
      const swatch = el("span", null, "kind-swatch");
      swatch.dataset.kind = kind;
      swatch.setAttribute("aria-hidden", "true");
      const link = el("a", kind);
      link.href = `/memory?namespace=${encodeURIComponent(namespace)}&kind=${encodeURIComponent(kind)}`;
      link.title = `every ${kind} record of ${namespace}`;
      const shown = Object.hasOwn(namespaceCounts, kind) ? `${count} shown of ${namespaceCounts[kind]}` : `${count} shown`;
      item.append(swatch, link, el("span", shown, "legend-count"));
      item.addEventListener("mouseenter", () => focusKind(kind));
      item.addEventListener("mouseleave", () => focusKind(null));
      return item;
    }));
    paintSwatches(legend);
  }

  function focusKind(kind) {
    cy.elements().removeClass("faded");
    if (kind === null) return;
    const others = cy.nodes().filter((node) => node.data("kind") !== kind);
    others.addClass("faded");
    others.connectedEdges().addClass("faded");
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
    showLegend();
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
  cy.on("mouseover", "node, edge", (event) => { event.target.addClass("hovered"); });
  cy.on("mouseout", "node, edge", (event) => { event.target.removeClass("hovered"); });
  document.getElementById("explorer-more").addEventListener("click", () => { more(); });
  document.getElementById("explorer-fit").addEventListener("click", () => { cy.fit(undefined, 30); });

  window.mnemoflowExplorer = { cy, select, more, loadPage, nodeCount: () => cy.nodes().length };

  await loadPage(root.dataset.id);
  cy.getElementById(root.dataset.id).addClass("centre");
  await select(root.dataset.id);
  root.dataset.ready = "true";
}

paintSwatches(document);
const explorer = document.getElementById("explorer");
if (explorer) await explore(explorer);
