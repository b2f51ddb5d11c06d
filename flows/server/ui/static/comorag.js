// The ComoRAG question workspace: one button opens or closes every unit's evidence, and while the question is
// open (its run is still working) the page follows it, reloading when the workspace's API shows a change.
const root = document.getElementById("comorag-workspace");
const FOLLOW_EVERY_MS = 2000;

function setUpEvidenceToggle() {
  const toggle = document.getElementById("evidence-toggle");
  const folds = [...document.querySelectorAll("details.cr-evidence")];
  if (!toggle || !folds.length) return;
  const label = () => {
    toggle.textContent = folds.every((fold) => fold.open) ? "Hide all evidence" : "Show all evidence";
  };
  toggle.hidden = false;
  toggle.addEventListener("click", () => {
    const open = !folds.every((fold) => fold.open);
    for (const fold of folds) fold.open = open;
    label();
  });
  for (const fold of folds) fold.addEventListener("toggle", label);
  label();
}

// What the page shows of the workspace, as one string: a change means the page is out of date.
function shape(workspace) {
  const attempts = workspace.attempts.map((attempt) => {
    const units = attempt.probes.map((probe) => `${probe.id}:${probe.units.map((unit) => `${unit.id}${unit.in_pool ? "+" : ""}`).join(",")}`);
    return `${attempt.index}/${attempt.status}/${attempt.fusion ? attempt.fusion.id : ""}/${units.join(";")}`;
  });
  return `${workspace.status}|${workspace.final_answer}|${attempts.join("|")}`;
}

async function follow() {
  const address = `/api/mechanisms/comorag/question?${new URLSearchParams({ namespace: root.dataset.namespace, id: root.dataset.question })}`;
  let seen = null;
  const check = async () => {
    if (document.visibilityState === "visible") {
      let now = null;
      try {
        const response = await fetch(address, { headers: { Accept: "application/json" } });
        if (response.ok) now = shape(await response.json());
      } catch {
        now = null; // the server is away for a moment: the page stays as it is, the next check tries again
      }
      if (now !== null && seen !== null && now !== seen) {
        window.location.reload();
        return;
      }
      if (now !== null) seen = now;
    }
    setTimeout(check, FOLLOW_EVERY_MS);
  };
  await check();
}

if (root) {
  setUpEvidenceToggle();
  if (root.dataset.status === "open") follow();
}
