// Uploads on the folder page: files and whole folders dropped anywhere on the page, or picked
// with the Upload button. Each file is its own request (api.js's upload: XMLHttpRequest, for progress),
// a few at a time, streamed by the browser from disk (FormData with the File; never read here).
(() => {
  "use strict";

  const browser = document.getElementById("browser");
  const list = document.getElementById("uploads");
  if (!browser || !list) return;

  const app = window.opentermd; // api.js, loaded first by base.html
  const directory = browser.dataset.path;
  const input = document.getElementById("upload-input");
  const dropzone = document.getElementById("dropzone");
  const CONCURRENCY = 3;

  const queue = []; // jobs waiting for a slot
  const running = new Set();
  let batch = newBatch();

  function newBatch() {
    // always: the answer "apply to all" gave for the rest of this round's conflicts.
    return { done: 0, failed: 0, cancelled: 0, skipped: 0, always: null, existing: null };
  }

  const notify = (message, kind = "info") => app.toast(message, kind);
  const reload = () => app.reload();

  /** `folder` (a/b, from a dropped folder) under the page's directory. */
  function targetDirectory(folder) {
    if (!folder) return directory;
    return directory.replace(/\/+$/, "") + "/" + folder;
  }

  function humanSize(bytes) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${unit ? value.toFixed(value < 10 ? 1 : 0) : value} ${units[unit]}`;
  }

  // --- rows ---------------------------------------------------------------------------------------

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function makeRow(job) {
    const row = element("li", "upload");
    row.dataset.testid = "upload-row";
    row.dataset.state = "queued";
    const label = job.folder ? `${job.folder}/${job.file.name}` : job.file.name;
    const name = element("span", "upload-name", label);
    name.title = `${label} \u2192 ${targetDirectory(job.folder)}`;
    const size = element("span", "upload-size", humanSize(job.file.size));
    const bar = element("progress", "upload-progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", `Uploading ${label}`);
    const percent = element("span", "upload-percent", "Queued");
    const message = element("span", "upload-message");
    const cancel = element("button", "upload-cancel", "Cancel");
    cancel.type = "button";
    cancel.dataset.action = "cancel-upload";
    cancel.setAttribute("aria-label", `Cancel ${label}`);
    cancel.addEventListener("click", () => cancelJob(job));
    row.append(name, size, bar, percent, message, cancel);
    list.append(row);
    return { row, bar, percent, message, cancel };
  }

  function setState(job, state, text) {
    job.ui.row.dataset.state = state;
    if (state !== "queued" && state !== "uploading") {
      job.ui.cancel.remove();
      job.ui.bar.remove();
    }
    if (text !== undefined) {
      job.ui.percent.textContent = state === "done" ? "100%" : "";
      job.ui.message.textContent = text;
    }
  }

  function setProgress(job, fraction) {
    const percent = Math.min(100, Math.floor(fraction * 100));
    job.ui.bar.value = percent;
    job.ui.percent.textContent = `${percent}%`;
  }

  // --- the queue ----------------------------------------------------------------------------------

  function enqueue(files) {
    if (!files.length) return;
    if (list.querySelector(".upload-summary")) {
      // A new round starts: the previous one's rows and summary have been seen.
      list.replaceChildren(...list.querySelectorAll(".upload[data-state=queued], .upload[data-state=uploading]"));
    }
    // The names already here, read once, so that a conflict is asked about before a large file is
    // sent; the server's refusal (409) still decides, for a file that appears in the meantime.
    batch.existing ??= app.json("GET", "/files/list?directory=" + encodeURIComponent(directory))
      .then((listing) => new Set(listing.entries.map((entry) => entry.name)))
      .catch(() => new Set());
    for (const { file, folder } of files) {
      const job = { file, folder, abort: null, state: "queued", conflict: "refuse" };
      job.ui = makeRow(job);
      queue.push(job);
    }
    pump();
  }

  function pump() {
    while (running.size < CONCURRENCY && queue.length) start(queue.shift());
    if (!running.size && !queue.length) finishBatch();
  }

  async function start(job) {
    job.state = "uploading";
    setState(job, "uploading");
    setProgress(job, 0);
    running.add(job);
    job.abort = new AbortController();
    if (!job.folder && (await batch.existing).has(job.file.name)) {
      job.conflict = await decide(job);
      if (job.conflict === "skip") return finish(job, "skipped", "Skipped: a file of that name is there");
    }
    send(job);
  }

  function send(job) {
    if (job.state !== "uploading") return;
    const form = new FormData();
    form.append("file", job.file, job.file.name);
    const url = "/files/upload?directory=" + encodeURIComponent(targetDirectory(job.folder))
      + "&conflict=" + encodeURIComponent(job.conflict);
    app.upload(url, form, { signal: job.abort.signal, onProgress: (fraction) => setProgress(job, fraction) })
      .then(async ({ status, body, message }) => {
        if (status >= 200 && status < 300) {
          const landed = body?.path ? body.path.split("/").pop() : job.file.name;
          return finish(job, "done", landed === job.file.name ? "Uploaded" : `Uploaded as ${landed}`);
        }
        if (status === 409 && job.conflict === "refuse") {
          job.conflict = await decide(job);
          if (job.conflict === "skip") return finish(job, "skipped", "Skipped: a file of that name is there");
          return send(job);
        }
        finish(job, "error", `${status}: ${message}`);
      })
      .catch((error) => finish(job, error.name === "AbortError" ? "cancelled" : "error",
        error.name === "AbortError" ? "Cancelled" : error.message));
  }

  // --- conflicts: Replace, Keep both, or Skip, one question at a time ---------------------------

  let asking = Promise.resolve();

  function decide(job) {
    const answer = asking.then(() => batch.always || ask(job));
    asking = answer.catch(() => {});
    return answer;
  }

  async function ask(job) {
    if (job.state !== "uploading") return "skip"; // cancelled while waiting for its turn
    const name = job.folder ? `${job.folder}/${job.file.name}` : job.file.name;
    const waiting = [...queue, ...running].filter((other) => other !== job).length;
    const choice = await app.dialogs.choose({
      title: `${name} already exists`,
      message: `A file named ${job.file.name} is already in ${targetDirectory(job.folder)}. Replace it, keep both `
        + "(the upload gets a numbered name), or skip this file?",
      choices: [{ value: "skip", label: "Skip" }, { value: "replace", label: "Replace", danger: true },
        { value: "keep-both", label: "Keep both" }],
      applyToAll: waiting ? "Do the same for the other conflicts in this upload" : undefined,
      testid: "upload-conflict",
    });
    if (!choice) return "skip";
    if (choice.all) batch.always = choice.value;
    return choice.value;
  }

  function cancelJob(job) {
    if (job.state === "queued") {
      queue.splice(queue.indexOf(job), 1);
      job.state = "cancelled";
      setState(job, "cancelled", "Cancelled");
      batch.cancelled += 1;
      pump();
    } else if (job.state === "uploading") {
      job.abort.abort(); // the server drops the partial file: nothing is left behind
      finish(job, "cancelled", "Cancelled"); // also when it was waiting for a conflict's answer
    }
  }

  function finish(job, state, text) {
    if (job.state !== "uploading") return; // one ending per job (abort after load, ...)
    job.state = state;
    running.delete(job);
    if (state === "done") batch.done += 1;
    else if (state === "error") batch.failed += 1;
    else if (state === "skipped") batch.skipped += 1;
    else batch.cancelled += 1;
    setState(job, state, text);
    pump();
  }

  function finishBatch() {
    const { done, failed, cancelled, skipped } = batch;
    if (!done && !failed && !cancelled && !skipped) return;
    batch = newBatch();
    if (!failed) {
      if (done) reload(); // the listing shows the new files
      else summarize(`Nothing uploaded (${[cancelled && `${cancelled} cancelled`, skipped && `${skipped} skipped`].filter(Boolean).join(", ")}).`, false);
      return;
    }
    const counts = [`${done} uploaded`, `${failed} failed`];
    if (cancelled) counts.push(`${cancelled} cancelled`);
    if (skipped) counts.push(`${skipped} skipped`);
    summarize(counts.join(", ") + ".", done > 0);
    notify(`Upload: ${counts.join(", ")}`, "error");
  }

  function summarize(text, offerReload) {
    const row = element("li", "upload-summary");
    row.dataset.testid = "upload-summary";
    row.append(element("span", "upload-message", text));
    if (offerReload) {
      const show = element("button", "", "Show the uploaded files");
      show.type = "button";
      show.addEventListener("click", reload);
      row.append(show);
    }
    const dismiss = element("button", "", "Dismiss");
    dismiss.type = "button";
    dismiss.addEventListener("click", () => list.replaceChildren());
    row.append(dismiss);
    list.append(row);
  }

  // --- dropped files and folders ------------------------------------------------------------------

  /** Every file under the dropped items, with its folder relative to the drop ("" at the top). */
  async function droppedFiles(dataTransfer) {
    // Entries must be taken during the drop event: the DataTransfer is emptied once it returns.
    const entries = [...(dataTransfer.items || [])]
      .filter((item) => item.kind === "file")
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
    if (!entries.length || entries.some((entry) => !entry)) {
      return [...dataTransfer.files].map((file) => ({ file, folder: "" }));
    }
    const files = [];
    const emptyFolders = [];
    await Promise.all(entries.map((entry) => walk(entry, "", files, emptyFolders)));
    await Promise.all(emptyFolders.map(makeFolder));
    return files;
  }

  async function walk(entry, folder, files, emptyFolders) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      files.push({ file, folder });
      return;
    }
    if (!entry.isDirectory) return;
    const inside = folder ? `${folder}/${entry.name}` : entry.name;
    const children = await readAll(entry.createReader());
    if (!children.length) emptyFolders.push(inside);
    for (const child of children) await walk(child, inside, files, emptyFolders);
  }

  async function readAll(reader) {
    // readEntries hands out a folder in batches (100 in Chromium) until it returns none.
    const all = [];
    for (;;) {
      const batchOf = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batchOf.length) return all;
      all.push(...batchOf);
    }
  }

  async function makeFolder(folder) {
    // Files create their folders on the server; an empty folder needs asking for.
    try {
      await app.api("POST", "/files/mkdir", { json: { path: targetDirectory(folder) } });
      batch.done += 1; // counts as something made, so the listing is reloaded to show it
    } catch (error) {
      notify(`Could not create the folder ${folder} (${error.message})`, "error");
    }
  }

  const carriesFiles = (event) => Boolean(event.dataTransfer)
    && [...event.dataTransfer.types].includes("Files");

  let depth = 0; // dragenter/dragleave pairs, as the pointer crosses child elements
  const showDropzone = (visible) => {
    if (dropzone) dropzone.hidden = !visible;
    browser.classList.toggle("dragging", visible);
  };

  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    depth += 1;
    showDropzone(true);
  });
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault(); // allow the drop
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", (event) => {
    if (!carriesFiles(event)) return;
    depth = Math.max(0, depth - 1);
    if (!depth) showDropzone(false);
  });
  document.addEventListener("drop", async (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault(); // never let the browser navigate to the dropped file
    depth = 0;
    showDropzone(false);
    try {
      const files = await droppedFiles(event.dataTransfer);
      if (files.length) enqueue(files);
      else pump(); // only empty folders: the listing is reloaded to show them, if nothing else runs
    } catch (error) {
      notify(`Could not read what was dropped: ${error.message}`, "error");
    }
  });

  if (input) {
    input.addEventListener("change", () => {
      enqueue([...input.files].map((file) => ({ file, folder: "" })));
      input.value = ""; // choosing the same file again is a new upload
    });
  }

  window.addEventListener("beforeunload", (event) => {
    if (!running.size && !queue.length) return;
    event.preventDefault();
    event.returnValue = "";
  });
})();
