// The TME conversation page: picking a turn shows the forest after it at once (the form's own submit, so the page
// stays a plain GET and works the same without this script), and the arrow keys step to the turn before or after.
const form = document.getElementById("turn-form");
if (form) {
  const show = document.getElementById("turn-show");
  if (show) show.hidden = true;
  document.getElementById("turn-select")?.addEventListener("change", () => form.requestSubmit());
}

const KEYS = { ArrowLeft: "turn-previous", ArrowRight: "turn-next" };
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
  if (target instanceof HTMLElement && target.closest("input, select, textarea, [contenteditable]")) return;
  const link = KEYS[event.key] ? document.getElementById(KEYS[event.key]) : null;
  if (link instanceof HTMLAnchorElement) {
    event.preventDefault();
    link.click();
  }
});
