// The trash on the pages (loaded by base.html on every page, after api.js and dialogs.js):
//
//   opentermd.undo.remember(path)  a page deleted `path` (just before it reloads): the next page shows
//                                  "Deleted … Undo", which restores it from the trash
//   opentermd.undo.restore(id)     restore one trash item; when its place is taken, a dialog offers the
//                                  server's suggested free name -> the restored path, or null if cancelled
//
// and the /trash page's buttons: Restore, Delete for good, Empty trash.
"use strict";

(() => {
  const app = window.opentermd;
  const { request, api, json, toast, dialogs } = app;
  const KEY = "opentermd.undo";
  //: A pending Undo older than this (the reload never came, or came much later) is dropped.
  const FRESH_MS = 60000;
  const UNDO_MS = 12000;

  async function restoreAs(id, name) {
    const response = await request("POST", "/files/trash/restore", { json: name ? { id, name } : { id } });
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON: the status says it */ }
    if (response.ok) return { path: body.path };
    if (response.status === 409 && body?.suggestion) return { conflict: body };
    const error = new Error(await app.detail(response));
    error.status = response.status;
    throw error;
  }

  /** Restore `id`; a taken place asks for another name (the server's suggestion filled in). */
  async function restore(id) {
    const first = await restoreAs(id);
    if (!first.conflict) return first.path;
    let restored = null;
    const name = await dialogs.prompt({
      title: "Restore under another name", label: `${first.conflict.detail}. New name:`,
      value: first.conflict.suggestion, confirmLabel: "Restore", selectStem: true, check: dialogs.nameProblem,
      testid: "restore-dialog",
      async submit(value) {
        const again = await restoreAs(id, value);
        if (again.conflict) throw new Error(`${again.conflict.detail} (free: ${again.conflict.suggestion})`);
        restored = again.path;
      },
    });
    return name === null ? null : restored;
  }

  // --- Undo after a delete ----------------------------------------------------------------------------

  function remember(path) {
    let pending = [];
    try { pending = JSON.parse(sessionStorage.getItem(KEY) || "{}").paths || []; } catch (_) { /* start afresh */ }
    sessionStorage.setItem(KEY, JSON.stringify({ paths: [...pending, path], at: Date.now() }));
  }

  function takePending() {
    const raw = sessionStorage.getItem(KEY);
    sessionStorage.removeItem(KEY);
    try {
      const pending = JSON.parse(raw || "{}");
      return Date.now() - (pending.at || 0) < FRESH_MS ? pending.paths || [] : [];
    } catch (_) {
      return [];
    }
  }

  /** Each deleted path's trash item: the newest entry from that path (the list is newest first). */
  async function trashIds(paths) {
    const { entries } = await json("GET", "/files/trash");
    const ids = [];
    for (const path of paths) {
      const entry = entries.find((item) => item.original_path === path && !ids.includes(item.id));
      if (entry) ids.push(entry.id);
    }
    return ids;
  }

  function showUndo(paths, ids) {
    const box = document.getElementById("toast");
    if (!box) return;
    const name = paths.length === 1 ? paths[0].split("/").pop() : `${paths.length} items`;
    box.textContent = `Deleted ${name} (moved to the trash).`;
    box.className = "info";
    const button = dialogs.element("button", { type: "button", className: "toast-action", "data-testid": "undo" }, "Undo");
    box.append(button);
    box.hidden = false;
    const timer = setTimeout(() => { if (box.contains(button)) box.hidden = true; }, UNDO_MS);
    button.addEventListener("click", async () => {
      clearTimeout(timer);
      button.disabled = true;
      try {
        for (const id of ids) {
          if ((await restore(id)) === null) { button.disabled = false; return; }
        }
        app.reload();
      } catch (error) {
        toast(error.message, "error");
      }
    });
  }

  async function offerUndo() {
    const paths = takePending();
    if (!paths.length) return;
    try {
      const ids = await trashIds(paths);
      if (ids.length) showUndo(paths, ids);  // none: the trash is off, so nothing to undo
    } catch (_) { /* no trash to ask: no Undo */ }
  }

  // --- the /trash page ---------------------------------------------------------------------------------

  function trashPage(page) {
    const attempt = (action) => action().catch((error) => toast(error.message, "error"));
    const drop = (row) => {
      row.remove();
      if (!page.querySelector('[data-testid="trash-row"]')) app.reload();  // the empty state is the server's
    };
    const actions = {
      restore: (row) => attempt(async () => {
        const path = await restore(row.dataset.id);
        if (path === null) return;
        drop(row);
        toast(`Restored ${path}`);
      }),
      forget: (row) => attempt(async () => {
        const sure = await dialogs.confirm({ title: `Delete ${row.dataset.name} for good?`,
          message: "It leaves the trash: this cannot be undone.", confirmLabel: "Delete for good", danger: true });
        if (!sure) return;
        await api("DELETE", `/files/trash?id=${encodeURIComponent(row.dataset.id)}`);
        drop(row);
      }),
      "empty-trash": () => attempt(async () => {
        const count = page.querySelectorAll('[data-testid="trash-row"]').length;
        const sure = await dialogs.confirm({ title: "Empty the trash?",
          message: `${count} item${count === 1 ? "" : "s"} will be deleted for good: this cannot be undone.`,
          confirmLabel: "Empty trash", danger: true, testid: "empty-dialog" });
        if (!sure) return;
        await api("DELETE", "/files/trash", { timeout: 0 });
        app.reload();
      }),
    };
    page.addEventListener("click", (event) => {
      const control = event.target.closest("[data-action]");
      if (!control || !(control.dataset.action in actions)) return;
      actions[control.dataset.action](control.closest("tr"));
    });
  }

  window.opentermd = Object.assign(app, { undo: { remember, restore } });
  const page = document.getElementById("trash-page");
  if (page) trashPage(page);
  offerUndo();
})();
