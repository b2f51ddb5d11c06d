// The runs list: a thread's runs fold under its row (a button opens them in place; without scripts the thread's
// link shows them on their own page); a list filtered to a thread that has no runs yet looks again every two
// seconds and reloads once one has appeared (a run started through Prefect is recorded only when a worker starts it).

const WAIT_MS = 2000;

function setOpen(group, open) {
  group.dataset.open = open ? "true" : "false";
  group.querySelector(".thread-row .toggle").setAttribute("aria-expanded", open ? "true" : "false");
  for (const row of group.querySelectorAll("tr.thread-run")) row.hidden = !open;
}

for (const group of document.querySelectorAll("tbody.thread-group")) {
  const button = group.querySelector(".thread-row .toggle");
  button.hidden = false;
  group.querySelector(".no-script-count")?.remove();
  button.addEventListener("click", () => setOpen(group, group.dataset.open !== "true"));
}

const waiting = document.getElementById("runs-waiting");

async function lookAgain() {
  const query = new URLSearchParams({ thread: waiting.dataset.thread, limit: "1" });
  if (waiting.dataset.namespace) query.set("namespace", waiting.dataset.namespace);
  try {
    const response = await fetch(`/api/runs?${query}`, { headers: { Accept: "application/json" } });
    if (response.ok && (await response.json()).length) {
      window.location.reload();
      return;
    }
    if (!response.ok && response.status < 500) return; // a bad filter or no longer signed in: stop asking
  } catch (error) {
    // the server may be restarting: keep asking
  }
  setTimeout(lookAgain, WAIT_MS);
}

if (waiting) setTimeout(lookAgain, WAIT_MS);
