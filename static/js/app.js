// The file manager's behaviour: actions through the JSON API, keyboard shortcuts, filter, search.
// Loaded by every page after the server-rendered HTML; no inline scripts (the CSP forbids them).
"use strict";

(() => {
  // Requests, errors and the toast live in api.js (loaded first by base.html).
  const { api, toast, reload } = window.opentermd;

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
      toast(error.message, "error");
    }
  }

  // --- actions --------------------------------------------------------------------------------

  const actions = {
    "new-file": () => attempt(async () => {
      const name = prompt("New file name");
      if (!name) return;
      const exists = await (await api("GET", `/files/display?path=${encodeURIComponent(join(name))}`)).json();
      if (exists.exists) throw new Error(`${name} already exists`);
      await api("POST", "/files/write", { json: { path: join(name), content: "" } });
      window.location.href = "/browse" + encodeURI(join(name));
    }),
    "new-folder": () => attempt(async () => {
      const name = prompt("New folder name");
      if (!name) return;
      await api("POST", "/files/mkdir", { json: { path: join(name) } });
      reload();
    }),
    rename: (row) => attempt(async () => {
      const name = prompt("Rename to", row.dataset.name);
      if (!name || name === row.dataset.name) return;
      await api("POST", "/files/move", { json: { source: row.dataset.path, destination: join(name) } });
      reload();
    }),
    move: (row) => attempt(async () => {
      const destination = prompt("Move to (a full path)", row.dataset.path);
      if (!destination || destination === row.dataset.path) return;
      await api("POST", "/files/move", { json: { source: row.dataset.path, destination } });
      reload();
    }),
    delete: (row) => attempt(async () => {
      const targets = row ? [row] : selected();
      if (!targets.length) return;
      const names = targets.map((item) => item.dataset.name).join(", ");
      if (!confirm(`Delete ${names}? This cannot be undone.`)) return;
      for (const item of targets) {
        await api("DELETE", `/files/delete?path=${encodeURIComponent(item.dataset.path)}`);
      }
      reload();
    }),
    "copy-path": (row) => attempt(async () => {
      const path = row ? row.dataset.path : directory;
      await navigator.clipboard.writeText(path);
      toast(`Copied ${path}`);
    }),
    zip: () => attempt(async () => {
      const chosen = selected();
      const paths = chosen.length ? chosen.map((row) => row.dataset.path) : [directory];
      const response = await api("POST", "/files/archive", { json: { paths } });
      const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
      const link = document.createElement("a");
      link.href = URL.createObjectURL(await response.blob());
      link.download = match ? match[1] : "download.zip";
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    }),
    "select-all": (_, input) => rows().forEach((row) => { row.querySelector(".check input").checked = input.checked; }),
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
    actions[control.dataset.action](control.closest("tr.entry"), control);
  });
  document.addEventListener("change", (event) => {
    if (event.target.matches('[data-action="select-all"]')) actions["select-all"](null, event.target);
  });

  // --- filter (as you type, on this page; Enter asks the server across every page) ---------------

  const filter = document.getElementById("filter");
  filter?.addEventListener("input", () => {
    const needle = filter.value.toLowerCase();
    document.querySelectorAll("tr.entry").forEach((row) => {
      row.hidden = !row.dataset.name.toLowerCase().includes(needle);
    });
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
  const keys = {
    "?": actions.help,
    "/": () => filter?.focus(),
    s: () => search?.focus(),
    j: () => moveCursor(1),
    ArrowDown: () => moveCursor(1),
    k: () => moveCursor(-1),
    ArrowUp: () => moveCursor(-1),
    Enter: () => current()?.querySelector(".name a")?.click(),
    x: () => { const box = current()?.querySelector(".check input"); if (box) box.checked = !box.checked; },
    Backspace: () => document.querySelector('[data-testid="parent"]')?.click(),
    n: () => actions["new-file"](),
    N: () => actions["new-folder"](),
    F2: () => current() && actions.rename(current()),
    Delete: () => actions.delete(current()),
    c: () => actions["copy-path"](current()),
    u: () => document.getElementById("upload-input")?.click(),
    z: () => actions.zip(),
  };

  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input, textarea, select, [contenteditable], .cm-editor, .editor-host");
    if (typing || event.ctrlKey || event.metaKey || event.altKey) {
      if (event.key === "Escape" && typing) typing.blur?.();
      return;
    }
    const handler = keys[event.key];
    if (!handler || (!browser && event.key !== "?")) return;
    event.preventDefault();
    handler();
  });
})();
