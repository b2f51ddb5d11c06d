// The G-Memory page: the status filter applies when picked, and an insight or query named by the address's
// fragment (a link from a query's page: #insight-<id>) is opened and scrolled to.
const form = document.getElementById("gm-status")?.form;
if (form) {
  document.getElementById("gm-status-show").hidden = true;
  form.elements.namedItem("status").addEventListener("change", () => form.requestSubmit());
}

function openNamed() {
  const id = decodeURIComponent(window.location.hash.slice(1));
  const target = id ? document.getElementById(id) : null;
  if (target instanceof HTMLDetailsElement) {
    target.open = true;
    target.scrollIntoView({ block: "start" });
  }
}

window.addEventListener("hashchange", openNamed);
openNamed();
