// A folder's page: the actions on its entries through in-app dialogs (dialogs.js) and the JSON API
// (api.js): new, rename, move and copy through a folder picker, duplicate, extract, share, delete,
// native downloads; the selection bar (with "all N entries" across pages); the row menu; dragging
// rows onto folders and breadcrumbs to move them. Adds to app.js's `opentermd.page.actions`.
"use strict";

(() => {
  const app = window.opentermd;
  const browser = document.getElementById("browser");
  if (!browser || !app?.page || !app.dialogs) return;

  const { api, json, toast, reload, dialogs, page } = app;
  const { actions, rows, selected, directory, join, attempt } = page;
  // The server's routes for what engineer A's brief names (hidden endpoints: not in /openapi.json).
  const ROUTES = {
    copy: "/files/copy",          // POST {source, destination?, conflict}: never clobbers
    extract: "/files/extract",    // POST {path} -> {path}: into a new folder beside the archive
    create: "/files/create",      // POST {directory, name, type, conflict}: 409 when taken, 400 for a bad name
    rename: "/files/rename",      // POST {path, name}: same folder, never over an entry
    share: "/files/download/link", // GET ?path=&lifetime=<seconds> -> {url}
    zip: "/files/archive/download", // POST form: csrf_token, paths (repeated) -> streamed attachment
    download: "/files/download",  // GET ?path= -> the file as an attachment
  };
  const SHARE_LIFETIMES = [["15 minutes", 900], ["1 hour", 3600], ["1 day", 86400], ["7 days", 604800]];
  const ARCHIVE = /\.(zip|tar|tar\.gz|tgz|tar\.bz2|tbz2|tar\.xz|txz|tar\.zst)$/i;

  const browseUrl = (path) => "/browse" + path.split("/").map(encodeURIComponent).join("/");
  const baseName = (path) => path.replace(/\/+$/, "").split("/").pop();
  const parentOf = (path) => path.replace(/\/+$/, "").replace(/\/[^/]*$/, "") || "/";
  const inside = (folder, name) => (folder.endsWith("/") ? folder : folder + "/") + name;
  const plural = (count, one, many) => `${count} ${count === 1 ? one : many}`;

  // --- the selection ---------------------------------------------------------------------------------

  const bar = document.getElementById("selection-bar");
  const countLabel = bar?.querySelector("[data-testid=selection-count]");
  const everyButton = bar?.querySelector("[data-action=select-every]");
  const selectAll = browser.querySelector("[data-action=select-all]");
  const total = Number(browser.dataset.total || 0);
  let everything = null; // every entry of the folder (all pages), once asked for

  /** What the selection bar acts on: [{path, name, type}]. */
  function targets() {
    if (everything) return everything;
    return selected().map((row) => ({ path: row.dataset.path, name: row.dataset.name, type: row.dataset.type }));
  }

  function refreshBar() {
    if (!bar) return;
    const count = everything ? everything.length : selected().length;
    bar.hidden = count === 0;
    document.body.classList.toggle("has-selection", count > 0);
    countLabel.textContent = everything ? `All ${count} selected` : `${count} selected`;
    const pageFull = rows().length > 0 && selected().length === rows().length;
    everyButton.hidden = everything !== null || !pageFull || Number(browser.dataset.pages) <= 1;
    everyButton.textContent = `Select all ${total} entries in this folder`;
    if (selectAll) {
      selectAll.checked = pageFull;
      selectAll.indeterminate = !pageFull && selected().length > 0;
    }
  }

  document.addEventListener("change", (event) => {
    if (event.target.matches("[data-action=select-all]")) {
      rows().forEach((row) => { row.querySelector(".check input").checked = event.target.checked; });
    }
    if (event.target.matches("[data-action=select-all], tr.entry .check input")) {
      if (!event.target.checked) everything = null;
      refreshBar();
    }
  });
  document.addEventListener("opentermd:rows", refreshBar);

  async function selectEvery() {
    const listing = await json("GET", `/files/list?directory=${encodeURIComponent(directory)}`);
    const hidden = browser.dataset.hidden === "true";
    const needle = (browser.dataset.filter || "").toLowerCase();
    everything = listing.entries
      .filter((entry) => (hidden || !entry.name.startsWith(".")) && entry.name.toLowerCase().includes(needle))
      .map((entry) => ({ path: inside(directory, entry.name), name: entry.name, type: entry.type }));
    refreshBar();
  }

  function clearSelection() {
    everything = null;
    rows().forEach((row) => { row.querySelector(".check input").checked = false; });
    refreshBar();
  }

  // --- running an action on several entries ------------------------------------------------------------

  /** Run `each` on every target; report what failed; reload when anything changed. */
  async function forEach(items, verb, each) {
    const failures = [];
    let done = 0;
    for (const item of items) {
      try {
        await each(item);
        done += 1;
      } catch (error) {
        failures.push(`${item.name}: ${error.message}`);
      }
    }
    if (failures.length) {
      await dialogs.alert({ title: `${plural(failures.length, "entry", "entries")} could not be ${verb}`,
        message: failures.join("\n"), testid: "failures-dialog" });
    }
    if (done) reload();
  }

  // --- the folder picker ---------------------------------------------------------------------------------

  /** A dialog that browses folders through the listing API; resolves the chosen folder or null. */
  function pickFolder({ title, confirmLabel, start = directory, moving = [] }) {
    let current = start;
    let list;
    let where;
    const movingSet = new Set(moving);
    async function show(folder, fail) {
      let listing;
      try {
        listing = await json("GET", `/files/list?directory=${encodeURIComponent(folder)}`);
      } catch (error) {
        fail(error.message);
        return;
      }
      fail("");
      current = listing.dir || folder;
      where.textContent = current;
      const folders = listing.entries.filter((entry) => entry.type === "directory" && !entry.name.startsWith("."))
        .sort((a, b) => a.name.localeCompare(b.name));
      const items = [];
      if (current !== "/") items.push(["..", parentOf(current)]);
      for (const entry of folders) items.push([entry.name, inside(current, entry.name)]);
      list.replaceChildren(...items.map(([label, path]) => {
        const item = dialogs.element("li");
        const button = dialogs.element("button", { type: "button", className: "picker-folder", "data-testid": "picker-folder",
          "data-path": path, disabled: movingSet.has(path) }, label === ".." ? "\u2191 Parent folder" : label + "/");
        button.addEventListener("click", () => show(path, fail));
        item.append(button);
        return item;
      }));
      if (!items.length) list.append(dialogs.element("li", { className: "meta" }, "No folders here."));
    }
    return dialogs.open({
      title, testid: "folder-picker", wide: true,
      build(body, { fail }) {
        const label = dialogs.element("p", { className: "picker-where" });
        label.append(dialogs.element("span", { className: "meta" }, "Into: "));
        where = dialogs.element("strong", { "data-testid": "picker-where" }, current);
        label.append(where);
        list = dialogs.element("ul", { className: "picker-list", "aria-label": "Folders" });
        body.append(label, list);
        show(current, fail);
      },
      buttons: [
        { label: "Cancel", value: null, testid: "dialog-cancel" },
        { label: confirmLabel, primary: true, testid: "picker-choose", run: () => current },
      ],
    });
  }

  // --- names ------------------------------------------------------------------------------------------

  const askName = (options) => dialogs.prompt({ check: dialogs.nameProblem, ...options });

  /** Copy `item` into `folder`, never overwriting: beside itself the server names it "name (copy).ext",
   *  elsewhere a taken name gets the next free "name (1).ext". */
  function duplicate(item, folder) {
    const body = folder === parentOf(item.path) ? { source: item.path }
      : { source: item.path, destination: inside(folder, item.name), conflict: "keep-both" };
    return api("POST", ROUTES.copy, { json: body, timeout: 0 });
  }

  // --- downloads the browser manages ---------------------------------------------------------------------

  /** A form the server answers with a streamed zip attachment: the browser shows the download at once. */
  function downloadZip(paths) {
    const form = dialogs.element("form", { method: "post", action: ROUTES.zip, hidden: true });
    form.append(dialogs.element("input", { type: "hidden", name: "csrf_token", value: app.csrf() }));
    for (const path of paths) form.append(dialogs.element("input", { type: "hidden", name: "paths", value: path }));
    document.body.append(form);
    form.submit();
    form.remove();
  }

  function downloadFile(path) {
    const link = dialogs.element("a", { href: `${ROUTES.download}?path=${encodeURIComponent(path)}`, download: baseName(path), hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
  }

  // --- sharing --------------------------------------------------------------------------------------------

  function share(row) {
    let select;
    let output;
    let copyButton;
    return dialogs.open({
      title: `Share ${row.dataset.name}`, testid: "share-dialog", wide: true,
      message: "Anyone with the link can download this file, once, until it expires.",
      build(body) {
        const id = "share-lifetime";
        body.append(dialogs.element("label", { for: id }, "Link works for"));
        select = dialogs.element("select", { id, "data-testid": "share-lifetime" });
        for (const [label, seconds] of SHARE_LIFETIMES) select.append(dialogs.element("option", { value: seconds }, label));
        select.value = "3600";
        const row2 = dialogs.element("div", { className: "share-row" });
        output = dialogs.element("input", { type: "text", readonly: true, "data-testid": "share-url", "aria-label": "Share link",
          placeholder: "Create a link first" });
        copyButton = dialogs.element("button", { type: "button", "data-testid": "share-copy", disabled: true }, "Copy link");
        copyButton.addEventListener("click", async () => {
          try {
            await navigator.clipboard.writeText(output.value);
          } catch (_) {
            output.select();
            document.execCommand("copy"); // without clipboard permission (plain http), the old way
          }
          copyButton.textContent = "Copied";
          toast("Link copied");
        });
        row2.append(output, copyButton);
        body.append(select, row2);
      },
      buttons: [
        { label: "Close", value: null, testid: "dialog-cancel" },
        { label: "Create link", primary: true, testid: "share-create", async run() {
          const query = `path=${encodeURIComponent(row.dataset.path)}&lifetime=${encodeURIComponent(select.value)}`;
          const { url } = await json("GET", `${ROUTES.share}?${query}`);
          output.value = url;
          copyButton.disabled = false;
          copyButton.textContent = "Copy link";
          copyButton.focus();
          return false; // stay open: the link is to be copied
        } },
      ],
    });
  }

  // --- the actions ------------------------------------------------------------------------------------------

  const rowItem = (row) => ({ path: row.dataset.path, name: row.dataset.name, type: row.dataset.type });

  Object.assign(actions, {
    "new-file": () => attempt(async () => {
      const name = await askName({ title: "New file", label: "File name", confirmLabel: "Create", testid: "new-file-dialog",
        // O_EXCL on the server: an existing file is refused (409, shown inline), never emptied.
        submit: (value) => api("POST", ROUTES.create, { json: { directory, name: value, type: "file" } }) });
      if (name) window.location.href = browseUrl(join(name)); // an empty file opens in the editor
    }),
    "new-folder": () => attempt(async () => {
      const name = await askName({ title: "New folder", label: "Folder name", confirmLabel: "Create", testid: "new-folder-dialog",
        submit: (value) => api("POST", ROUTES.create, { json: { directory, name: value, type: "folder" } }) });
      if (name) reload();
    }),
    rename: (row) => attempt(async () => {
      const name = await askName({ title: `Rename ${row.dataset.name}`, label: "New name", value: row.dataset.name,
        confirmLabel: "Rename", selectStem: row.dataset.type !== "directory", testid: "rename-dialog",
        async submit(value) {
          if (value === row.dataset.name) return;
          await api("POST", ROUTES.rename, { json: { path: row.dataset.path, name: value } });
        } });
      if (name && name !== row.dataset.name) reload();
    }),
    move: (row) => moveItems(row ? [rowItem(row)] : targets()),
    "move-selected": () => moveItems(targets()),
    "copy-to": (row) => copyItems(row ? [rowItem(row)] : targets()),
    "copy-selected": () => copyItems(targets()),
    duplicate: (row) => attempt(async () => {
      await duplicate(rowItem(row), directory);
      reload();
    }),
    delete: (row) => deleteItems(row ? [rowItem(row)] : targets()),
    "delete-selected": () => deleteItems(targets()),
    zip: () => {
      const chosen = targets();
      downloadZip(chosen.length ? chosen.map((item) => item.path) : [directory]);
    },
    download: (row) => downloadFile(row.dataset.path),
    extract: (row) => attempt(async () => {
      const reply = await json("POST", ROUTES.extract, { json: { path: row.dataset.path }, timeout: 0 });
      toast(`Extracted into ${baseName(reply.path)}`);
      reload();
    }),
    share: (row) => attempt(() => share(row)),
    "open-terminal": (row) => {
      window.location.href = `/terminal?cwd=${encodeURIComponent(row ? row.dataset.path : directory)}`;
    },
    "select-every": () => attempt(selectEvery),
    "clear-selection": clearSelection,
    "row-menu": (row, button) => openMenu(row, button),
  });

  function moveItems(items) {
    if (!items.length) return;
    return attempt(async () => {
      const folder = await pickFolder({ title: `Move ${items.length === 1 ? items[0].name : plural(items.length, "entry", "entries")}`,
        confirmLabel: "Move here", moving: items.map((item) => item.path) });
      if (!folder) return;
      await moveInto(items, folder);
    });
  }

  async function moveInto(items, folder) {
    const moving = items.filter((item) => parentOf(item.path) !== folder && item.path !== folder);
    if (!moving.length) return;
    await forEach(moving, "moved", (item) => api("POST", "/files/move",
      { json: { source: item.path, destination: inside(folder, item.name) }, timeout: 0 }));
  }

  function copyItems(items) {
    if (!items.length) return;
    return attempt(async () => {
      const folder = await pickFolder({ title: `Copy ${items.length === 1 ? items[0].name : plural(items.length, "entry", "entries")}`,
        confirmLabel: "Copy here" });
      if (!folder) return;
      await forEach(items, "copied", (item) => duplicate(item, folder));
    });
  }

  function deleteItems(items) {
    if (!items.length) return;
    return attempt(async () => {
      const names = items.length <= 5 ? items.map((item) => item.name).join(", ") : plural(items.length, "entry", "entries");
      const sure = await dialogs.confirm({ title: `Delete ${names}?`, message: "It goes to the trash (unless the trash is turned off).",
        confirmLabel: "Delete", danger: true, testid: "delete-dialog" });
      if (!sure) return;
      await forEach(items, "deleted", (item) => api("DELETE", `/files/delete?path=${encodeURIComponent(item.path)}`)
        .then(() => app.undo?.remember(item.path)));  // the next page offers Undo (trash.js)
    });
  }

  // --- the row menu ("⋯") ---------------------------------------------------------------------------------

  let menu = null;

  function closeMenu(focusBack = true) {
    if (!menu) return;
    const { element, button } = menu;
    menu = null;
    element.remove();
    button.setAttribute("aria-expanded", "false");
    if (focusBack) button.focus();
  }

  function menuEntries(row) {
    const file = row.dataset.type === "file";
    const broken = row.dataset.broken === "true";
    const entries = [];
    if (!broken) entries.push(["open", "Open"], ["rename", "Rename"], ["move", "Move to\u2026"], ["copy-to", "Copy to\u2026"],
      ["duplicate", "Duplicate"]);
    else entries.push(["rename", "Rename"], ["move", "Move to\u2026"]);
    entries.push(["copy-path", "Copy path"]);
    if (file && !broken) entries.push(["download", "Download"], ["share", "Share link\u2026"]);
    if (file && !broken && ARCHIVE.test(row.dataset.name)) entries.push(["extract", "Extract here"]);
    if (!file && document.querySelector("[data-testid=open-terminal]")) entries.push(["open-terminal", "Open terminal here"]);
    entries.push(["delete", "Delete"]);
    return entries;
  }

  function openMenu(row, button) {
    const reopen = menu?.button === button;
    closeMenu(false);
    if (reopen) return;
    const element = dialogs.element("ul", { role: "menu", className: "row-menu-list", "data-testid": "row-menu-list",
      "aria-label": `Actions for ${row.dataset.name}` });
    for (const [action, label] of menuEntries(row)) {
      const item = dialogs.element("li", { role: "none" });
      const control = dialogs.element("button", { type: "button", role: "menuitem", tabindex: "-1", "data-menu-action": action,
        className: action === "delete" ? "danger" : undefined }, label);
      control.addEventListener("click", () => {
        closeMenu();
        if (action === "open") row.querySelector(".name a")?.click();
        else actions[action](row, control);
      });
      item.append(control);
      element.append(item);
    }
    document.body.append(element);
    const box = button.getBoundingClientRect();
    const width = element.offsetWidth;
    const height = element.offsetHeight;
    const below = box.bottom + height + 8 < window.innerHeight;
    element.style.left = `${Math.max(8, Math.min(window.innerWidth - width - 8, box.right - width)) + window.scrollX}px`;
    element.style.top = `${(below ? box.bottom + 4 : Math.max(8, box.top - height - 4)) + window.scrollY}px`;
    button.setAttribute("aria-expanded", "true");
    menu = { element, button };
    element.querySelector("button").focus();
    element.addEventListener("keydown", (event) => {
      const items = [...element.querySelectorAll("button")];
      const index = items.indexOf(document.activeElement);
      const go = { ArrowDown: index + 1, ArrowUp: index - 1, Home: 0, End: items.length - 1 }[event.key];
      if (go !== undefined) {
        event.preventDefault();
        items[(go + items.length) % items.length].focus();
      } else if (event.key === "Escape" || event.key === "Tab") {
        event.preventDefault();
        closeMenu();
      }
    });
  }

  document.addEventListener("pointerdown", (event) => {
    if (menu && !menu.element.contains(event.target) && !menu.button.contains(event.target)) closeMenu(false);
  });
  window.addEventListener("resize", () => closeMenu(false));

  // --- dragging rows onto folders and breadcrumbs to move them ------------------------------------------

  const DRAG_TYPE = "application/x-opentermd-paths";
  let dragged = null;

  const crumbs = document.querySelectorAll("[data-testid=breadcrumbs] a");
  crumbs.forEach((link) => {
    const path = decodeURIComponent(new URL(link.href).pathname.replace(/^\/browse/, "")) || "/";
    link.dataset.drop = "folder";
    link.dataset.path = path;
  });

  browser.addEventListener("dragstart", (event) => {
    const row = event.target.closest?.("tr.entry");
    if (!row) return;
    const checked = row.querySelector(".check input").checked;
    dragged = checked ? targets() : [rowItem(row)];
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData(DRAG_TYPE, JSON.stringify(dragged.map((item) => item.path)));
    event.dataTransfer.setData("text/plain", dragged.map((item) => item.path).join("\n"));
    row.classList.add("drag-source");
  });
  browser.addEventListener("dragend", () => {
    dragged = null;
    document.querySelectorAll(".drag-source, .drop-target").forEach((node) => node.classList.remove("drag-source", "drop-target"));
  });

  const dropTarget = (event) => {
    if (!dragged) return null;
    const target = event.target.closest?.("[data-drop=folder]");
    if (!target || dragged.some((item) => item.path === target.dataset.path)) return null;
    return target;
  };

  document.addEventListener("dragover", (event) => {
    const target = dropTarget(event);
    if (!target) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    document.querySelectorAll(".drop-target").forEach((node) => { if (node !== target) node.classList.remove("drop-target"); });
    target.classList.add("drop-target");
  });
  document.addEventListener("dragleave", (event) => {
    event.target.closest?.("[data-drop=folder]")?.classList.remove("drop-target");
  });
  document.addEventListener("drop", (event) => {
    const target = dropTarget(event);
    if (!target) return;
    event.preventDefault();
    const items = dragged;
    dragged = null;
    target.classList.remove("drop-target");
    attempt(() => moveInto(items, target.dataset.path));
  });

  refreshBar();
})();
