// The file page's History panel: opened, it loads /history/panel (the versions, and the newest one's
// diff against the file now, rendered by the server like the compare page); Diff shows another
// version's; Restore writes a version back through the history API (what is there now becomes a
// version itself) and reloads the page to show it.
"use strict";

(() => {
  const app = window.opentermd;
  const panel = document.getElementById("history");
  if (!panel) return;
  const slot = panel.querySelector(".history-slot");
  let loaded = false;

  async function load(id = "") {
    const query = new URLSearchParams({ path: panel.dataset.path });
    if (id) query.set("id", id);
    try {
      const response = await app.api("GET", `/history/panel?${query}`);
      // Our own page fragment, every value escaped by the template.
      slot.innerHTML = await response.text();
      loaded = true;
    } catch (error) {
      slot.textContent = `The history cannot be shown: ${error.message}`;
    }
  }

  panel.addEventListener("toggle", () => {
    if (panel.open && !loaded) load();
  });

  slot.addEventListener("click", async (event) => {
    const control = event.target.closest("[data-history]");
    if (!control) return;
    const id = control.closest("tr")?.dataset.id;
    if (!id) return;
    if (control.dataset.history === "diff") {
      await load(id);
      return;
    }
    const when = control.closest("tr").cells[0].textContent;
    const sure = await app.dialogs.confirm({ title: `Restore the version of ${when}?`,
      message: "The file gets that content back; what it holds now is kept as a version too.",
      confirmLabel: "Restore", testid: "history-restore-dialog" });
    if (!sure) return;
    try {
      await app.api("POST", "/files/history/restore", { json: { path: panel.dataset.path, id } });
      app.reload();
    } catch (error) {
      app.toast(error.message, "error");
    }
  });
})();
