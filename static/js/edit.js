// The inline editor on a text file's page: Edit (or `e`) swaps the preview for CodeMirror,
// Save (or Ctrl/Cmd+S) writes with If-Match so a file changed on disk is never silently
// overwritten, and a conflict offers to reload from disk or to overwrite.
(() => {
  "use strict";

  const section = document.getElementById("file");
  const box = document.getElementById("editor");
  if (!section || !box) return;

  const app = window.opentermd || {};
  const path = section.dataset.path;
  const host = document.getElementById("editor-host");
  const source = document.getElementById("editor-text");
  const status = box.querySelector(".editor-status");
  const editButton = section.querySelector("[data-action=edit]");
  const title = document.title;

  let editor = null;
  let etag = section.dataset.etag || null; // the version on disk our text is based on
  let savedVersion = null; // the editor's contents as last loaded or saved
  let savedOnce = false;
  let saving = null; // the save under way, if any
  let leaving = false;
  let conflict = null;
  let failure = null; // why the last save failed, until one succeeds
  const hiddenBefore = new Map(); // preview elements, and whether they were hidden already

  // --- talking to the server ----------------------------------------------------------------------

  const notify = (message, kind = "info") => {
    if (typeof app.toast === "function") app.toast(message, kind);
  };

  // api.js's request, not its api(): a 409 must be told apart from other failures, and the reply's
  // ETag header read. no-store: the editor wants the file as on disk now, never a cached copy.
  const request = (method, url, options = {}) => app.request(method, url, { cache: "no-store", ...options });
  const detail = (response) => app.detail(response);

  const viewUrl = () => "/files/view?path=" + encodeURIComponent(path);

  /** The file's exact text and ETag as on disk now (the page's textarea loses CR and a leading LF). */
  async function readFromDisk() {
    const response = await request("GET", viewUrl());
    if (!response.ok) throw new Error(await detail(response));
    const bytes = await response.arrayBuffer();
    const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
    return { text, etag: response.headers.get("ETag") };
  }

  /** The ETag of the file on disk now, without reading its body; null when it no longer exists. */
  async function currentEtag() {
    const abort = new AbortController();
    const response = await request("GET", viewUrl(), { signal: abort.signal });
    if (response.status === 404) return null;
    if (!response.ok) throw new Error(await detail(response));
    abort.abort(); // the headers are all we need
    return response.headers.get("ETag");
  }

  // --- status line --------------------------------------------------------------------------------

  function setStatus(message, kind = "info") {
    if (!status) return;
    status.textContent = message;
    status.dataset.kind = kind;
  }

  const isDirty = () => Boolean(editor && savedVersion && editor.changedSince(savedVersion));

  let dirtyCheck = 0;
  let shownDirty = false;
  function showDirty(dirty) {
    shownDirty = dirty;
    document.title = dirty ? "\u25CF " + title : title;
  }

  function onEdit() {
    // Comparing documents is cheap, but not worth doing on every keystroke of a fast typist.
    clearTimeout(dirtyCheck);
    dirtyCheck = setTimeout(() => {
      const dirty = isDirty();
      if (dirty === shownDirty) return; // keep "Saved at ..." until there is something new to say
      showDirty(dirty);
      if (saving || conflict) return;
      if (dirty && failure) setStatus(`Unsaved changes (the last save failed: ${failure})`, "error");
      else setStatus(dirty ? "Unsaved changes" : "No unsaved changes", dirty ? "dirty" : "info");
    }, 120);
  }

  // --- opening and closing ------------------------------------------------------------------------

  const isOpen = () => !box.hidden;

  function previewElements() {
    return [...section.children].filter((element) => element !== box && !element.classList.contains("toolbar"));
  }

  function show() {
    for (const element of previewElements()) {
      hiddenBefore.set(element, element.hidden);
      element.hidden = true;
    }
    box.hidden = false;
    section.classList.add("editing");
    if (editButton) editButton.setAttribute("aria-pressed", "true");
  }

  function hide() {
    for (const [element, wasHidden] of hiddenBefore) element.hidden = wasHidden;
    hiddenBefore.clear();
    box.hidden = true;
    section.classList.remove("editing");
    if (editButton) {
      editButton.setAttribute("aria-pressed", "false");
      editButton.focus();
    }
  }

  let opening = null;
  async function open() {
    if (isOpen() && editor) {
      editor.focus();
      return;
    }
    if (!window.OpentermdEditor) {
      notify("The editor could not be loaded.", "error");
      return;
    }
    show();
    if (!editor) {
      opening = opening || load();
      try {
        await opening;
      } catch (error) {
        opening = null;
        hide();
        notify(`The editor could not start: ${error.message}`, "error");
        return;
      }
    }
    editor.focus();
  }

  async function load() {
    setStatus("Loading\u2026");
    let text = source ? source.value : "";
    try {
      const current = await readFromDisk();
      if (current.etag && etag && current.etag !== etag) {
        notify("The file changed on disk since this page was loaded: editing the current version.");
      }
      text = current.text;
      etag = current.etag || etag;
    } catch (error) {
      // The page's copy is still worth editing; If-Match will catch a change on disk.
      notify(`Could not re-read the file (${error.message}); editing the page's copy.`, "error");
    }
    editor = window.OpentermdEditor.create(host, text, path);
    savedVersion = editor.version();
    editor.onSave(() => save());
    if (editor.onChange) editor.onChange(onEdit);
    setStatus(`${editor.language || "Plain text"} \u00B7 Ctrl+S saves`);
  }

  async function close() {
    if (!editor) return hide();
    if (isDirty() && !(await app.dialogs.confirm({
      title: "Discard the unsaved changes?", message: "The file keeps what was last saved.",
      confirmLabel: "Discard", danger: true, testid: "discard-dialog",
    }))) return;
    if (savedOnce) {
      // The preview was rendered from the old contents: show the new ones.
      leaving = true;
      (typeof app.reload === "function" ? app.reload : () => location.reload())();
      return;
    }
    if (isDirty()) editor.restore(savedVersion); // discarded: opening again starts from the file
    showDirty(false);
    setStatus("");
    hide();
  }

  // --- saving -------------------------------------------------------------------------------------

  async function save({ overwrite = false } = {}) {
    if (!editor) return;
    if (saving) return saving; // one write at a time; the next Ctrl+S saves what follows
    saving = (async () => {
      clearConflict();
      const version = editor.version();
      const content = editor.getText();
      setStatus(overwrite ? "Overwriting\u2026" : "Saving\u2026");
      const headers = {};
      try {
        if (overwrite) etag = await currentEtag();
        if (etag) headers["If-Match"] = etag;
        const response = await request("POST", "/files/write", { json: { path, content }, headers });
        if (response.status === 409) {
          showConflict(await detail(response));
          return;
        }
        if (!response.ok) throw new Error(await detail(response));
        etag = response.headers.get("ETag");
        section.dataset.etag = etag || "";
        failure = null;
        savedVersion = version;
        savedOnce = true;
        const time = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
        const dirty = isDirty(); // typed on while the write was on its way
        setStatus(dirty ? "Saved an earlier version; unsaved changes" : `Saved at ${time}`, dirty ? "dirty" : "saved");
        showDirty(dirty);
      } catch (error) {
        failure = error.message;
        setStatus(`Not saved: ${error.message}`, "error");
        notify(`Not saved: ${error.message}`, "error");
      }
    })();
    try {
      await saving;
    } finally {
      saving = null;
    }
  }

  function showConflict(message) {
    clearConflict();
    setStatus("Not saved: the file changed on disk", "error");
    conflict = document.createElement("div");
    conflict.className = "editor-conflict";
    conflict.setAttribute("role", "alert");
    conflict.dataset.testid = "editor-conflict";
    const text = document.createElement("p");
    text.textContent = `${message.replace(/\.$/, "")}. Reload it (your text stays in the undo history: Ctrl+Z) `
      + "or overwrite it with your text?";
    const reload = button("Reload from disk", "reload-from-disk", reloadFromDisk);
    const overwrite = button("Overwrite", "overwrite", () => save({ overwrite: true }));
    overwrite.classList.add("danger");
    conflict.append(text, reload, overwrite);
    box.querySelector(".editor-bar").after(conflict);
    reload.focus();
  }

  function clearConflict() {
    if (conflict) conflict.remove();
    conflict = null;
  }

  function button(label, action, handler) {
    const element = document.createElement("button");
    element.type = "button";
    element.textContent = label;
    element.dataset.action = action;
    element.dataset.testid = action;
    element.addEventListener("click", handler);
    return element;
  }

  async function reloadFromDisk() {
    try {
      const current = await readFromDisk();
      clearConflict();
      editor.setText(current.text);
      etag = current.etag;
      section.dataset.etag = etag || "";
      savedVersion = editor.version();
      savedOnce = true; // the preview is stale now, as after a save
      showDirty(false);
      setStatus("Reloaded from disk (Ctrl+Z brings back your text)", "saved");
      editor.focus();
    } catch (error) {
      setStatus(`Could not reload: ${error.message}`, "error");
    }
  }

  // --- wiring -------------------------------------------------------------------------------------

  const typingIn = (event) => {
    const target = event.composedPath ? event.composedPath()[0] : event.target;
    return target instanceof Element
      && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  };

  if (editButton) editButton.addEventListener("click", () => open());
  box.querySelector("[data-action=save]").addEventListener("click", () => save());
  box.querySelector("[data-action=cancel-edit]").addEventListener("click", close);

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented) return;
    const mod = event.ctrlKey || event.metaKey;
    if (mod && !event.altKey && event.key.toLowerCase() === "s" && isOpen()) {
      // Focus on the editor's buttons rather than its text: still ours, not the browser's Save page.
      event.preventDefault();
      save();
      return;
    }
    if (event.key === "e" && !mod && !event.altKey && !isOpen() && !typingIn(event)
        && !document.querySelector("dialog[open]") && editButton) {
      event.preventDefault();
      open();
    }
  });

  // A new (empty) file has nothing to preview: it opens straight in the editor.
  if (section.dataset.openEditor === "true") open();

  window.addEventListener("beforeunload", (event) => {
    if (leaving || !isDirty()) return;
    event.preventDefault();
    event.returnValue = ""; // older browsers want a value to show their prompt
  });
})();
