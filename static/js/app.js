// What every page of the file manager shares: the click dispatch on [data-action], the keyboard
// shortcuts, and on a folder's page the filter and the search box. The folder page's actions
// (dialogs, selection, moving, copying...) are in browse.js, which adds to `opentermd.page.actions`.
// Loaded after the server-rendered HTML and api.js; no inline scripts (the CSP forbids them).
"use strict";

(() => {
  const { toast } = window.opentermd;

  const browser = document.getElementById("browser");
  const directory = browser?.dataset.path || "";
  const join = (name) => (directory.endsWith("/") ? directory : directory + "/") + name;
  const rows = () => [...document.querySelectorAll("tr.entry")].filter((row) => !row.hidden);
  const selected = () => rows().filter((row) => row.querySelector(".check input")?.checked);
  let cursor = -1;

  async function attempt(action) {
    try {
      await action();
    } catch (error) {
      if (error?.name !== "AbortError") toast(error.message, "error");
    }
  }

  // --- actions (browse.js adds the folder page's) ---------------------------------------------------

  const actions = {
    "copy-path": (row) => attempt(async () => {
      const path = row ? row.dataset.path : directory;
      await navigator.clipboard.writeText(path);
      toast(`Copied ${path}`);
    }),
    help: () => document.getElementById("help")?.showModal(),
    "toggle-source": (_, button) => {
      const source = document.querySelector('[data-testid="preview-source"]');
      const rendered = document.querySelector('[data-testid="preview-markdown"]');
      if (!source || !rendered) return;
      const showSource = source.hidden;
      source.hidden = !showSource;
      rendered.hidden = showSource;
      button.textContent = showSource ? "Preview" : "Source";
    },
  };

  document.addEventListener("click", (event) => {
    const control = event.target.closest("[data-action]");
    if (!control || !(control.dataset.action in actions) || control.tagName === "A") return;
    if (control.closest("dialog.app-dialog, [role=menu]")) return;  // their own handlers
    actions[control.dataset.action](control.closest("tr.entry"), control, event);
  });

  // --- filter (as you type, on this page; Enter asks the server across every page) ---------------

  const filter = document.getElementById("filter");
  filter?.addEventListener("input", () => {
    const needle = filter.value.toLowerCase();
    document.querySelectorAll("tr.entry").forEach((row) => {
      row.hidden = !row.dataset.name.toLowerCase().includes(needle);
    });
    document.dispatchEvent(new CustomEvent("opentermd:rows"));
  });

  // --- search (names first, then contents) --------------------------------------------------------

  const search = document.getElementById("search");
  const results = document.getElementById("search-results");
  let searchTimer;
  let searchAbort;

  function showResults(items) {
    results.replaceChildren(...items.map(({ href, label, detail }) => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = href;
      link.textContent = label;
      item.append(link);
      if (detail) {
        const note = document.createElement("span");
        note.className = "detail";
        note.textContent = detail;
        item.append(note);
      }
      return item;
    }));
    results.hidden = items.length === 0;
  }

  async function runSearch(query) {
    searchAbort?.abort();
    searchAbort = new AbortController();
    const signal = searchAbort.signal;
    const base = `path=${encodeURIComponent(directory)}&query=${encodeURIComponent(query)}`;
    const response = await window.opentermd.request("GET", `/files/matches?${base}&limit=30`, { signal });
    if (!response.ok) return showResults([]);
    const payload = await response.json();
    showResults(payload.results.map((result) => ({
      href: "/browse" + encodeURI(result.path),
      label: result.relative_path + (result.type === "directory" ? "/" : ""),
      detail: result.content_matches.length ? `${result.content_matches[0].line}: ${result.content_matches[0].text.trim()}` : "",
    })));
  }

  search?.addEventListener("input", () => {
    clearTimeout(searchTimer);
    const query = search.value.trim();
    if (!query) return showResults([]);
    searchTimer = setTimeout(() => runSearch(query).catch(() => {}), 200);
  });

  // --- keyboard ---------------------------------------------------------------------------------

  function moveCursor(step) {
    const visible = rows();
    if (!visible.length) return;
    visible[cursor]?.classList.remove("cursor");
    cursor = Math.max(0, Math.min(visible.length - 1, cursor + step));
    visible[cursor].classList.add("cursor");
    visible[cursor].scrollIntoView({ block: "nearest" });
  }

  const current = () => rows()[cursor] || null;
  const run = (name, ...args) => actions[name]?.(...args);
  const keys = {
    "?": () => run("help"),
    "/": () => filter?.focus(),
    s: () => search?.focus(),
    j: () => moveCursor(1),
    ArrowDown: () => moveCursor(1),
    k: () => moveCursor(-1),
    ArrowUp: () => moveCursor(-1),
    Enter: () => current()?.querySelector(".name a")?.click(),
    x: () => {
      const box = current()?.querySelector(".check input");
      if (!box) return;
      box.checked = !box.checked;
      box.dispatchEvent(new Event("change", { bubbles: true }));
    },
    Backspace: () => document.querySelector('[data-testid="parent"]')?.click(),
    n: () => run("new-file"),
    N: () => run("new-folder"),
    F2: () => current() && run("rename", current()),
    Delete: () => run("delete", current()),
    c: () => run("copy-path", current()),
    u: () => document.getElementById("upload-input")?.click(),
    z: () => run("zip"),
  };

  document.addEventListener("keydown", (event) => {
    if (document.querySelector("dialog[open]")) return;  // a dialog has the keyboard
    const typing = event.target.closest("input, textarea, select, [contenteditable], .cm-editor, .editor-host");
    if (typing || event.ctrlKey || event.metaKey || event.altKey) {
      if (event.key === "Escape" && typing) typing.blur?.();
      return;
    }
    const handler = keys[event.key];
    if (!handler || (!browser && event.key !== "?")) return;
    // A focused control's own Enter (a button, a link) and the menu's keys are theirs.
    if (event.target.closest("[role=menu]") || (event.key === "Enter" && event.target.closest("button, a, summary"))) return;
    event.preventDefault();
    handler();
  });

  window.opentermd.page = { actions, keys, rows, selected, directory, join, attempt, current };
})();
