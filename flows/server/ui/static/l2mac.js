// The L2MAC project page: picking a version, or a version to compare with, shows it at once (the form's own
// submit, so the page stays a plain GET of /mechanisms/l2mac/project and works the same without this script).
const form = document.getElementById("version-form");
if (form) {
  const show = document.getElementById("version-show");
  if (show) show.hidden = true;
  for (const select of form.querySelectorAll("select")) {
    select.addEventListener("change", () => {
      // comparing a version with itself shows nothing: moving the version onto the compared one shows the file
      const version = form.elements.namedItem("version");
      const against = form.elements.namedItem("against");
      if (against && version && against.value === version.value) against.value = "";
      if (against && !against.value) against.disabled = true; // no empty "against=" in the address
      form.requestSubmit();
    });
  }
}
