// Running a notebook's cells from its page: "Run" on a code cell and "Run all" go through the notebook
// API (POST /notebooks once, then POST /notebooks/{id}/execute per cell); outputs replace the cell's
// outputs with the page's own rules: text through textContent, images as base64 data: URLs, HTML only
// in a frame sandboxed without allow-same-origin. The kernel is stopped when the page goes away.
(() => {
  "use strict";

  const notebook = document.getElementById("notebook");
  const app = window.opentermd;
  if (!notebook || !app) return;

  const path = notebook.dataset.path;
  const sandbox = notebook.dataset.sandbox || "";
  const status = notebook.querySelector("[data-testid=notebook-status]");
  const interruptButton = notebook.querySelector("[data-action=interrupt]");
  const runAllButton = notebook.querySelector("[data-action=run-all]");
  // The same caps as the server's rendering (daemon/pages/notebook_view.py).
  const MAX_OUTPUTS = 50;
  const MAX_TEXT = 100000;
  const MAX_HTML = 1024 * 1024;
  const MAX_IMAGE_BASE64 = Math.ceil((4 * 1024 * 1024) / 3) * 4;
  const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]/g;
  const BASE64 = /^[A-Za-z0-9+/=\s]*$/;

  let session = null; // the promise of the session id, made once
  let busy = false;
  let stopAll = false;

  // --- the session -----------------------------------------------------------------------------------

  function sessionId() {
    if (!session) {
      session = app.api("POST", "/notebooks", { json: { path } })
        .then((response) => response.json())
        .then((body) => body.id)
        .catch((error) => { session = null; throw error; });
    }
    return session;
  }

  async function execute(index) {
    const id = await sessionId();
    try {
      return await (await app.api("POST", `/notebooks/${id}/execute`, { json: { cell_index: index } })).json();
    } catch (error) {
      if (error.status !== 404) throw error;
      // The kernel was reaped (idle) or stopped: start another once and try again.
      session = null;
      const fresh = await sessionId();
      return (await app.api("POST", `/notebooks/${fresh}/execute`, { json: { cell_index: index } })).json();
    }
  }

  function stopKernel() {
    if (!session) return;
    // sendBeacon can only POST: a keepalive request outlives the page and can DELETE.
    session.then((id) => app.request("DELETE", `/notebooks/${id}`, { keepalive: true })).catch(() => {});
    session = null;
  }

  // --- outputs ---------------------------------------------------------------------------------------

  const joined = (value) => (Array.isArray(value) ? value.join("") : typeof value === "string" ? value : "");
  const capped = (text) => (text.length > MAX_TEXT
    ? `${text.slice(0, MAX_TEXT)}\n\u2026 ${(text.length - MAX_TEXT).toLocaleString()} more characters not shown` : text);

  function pre(kind, text, testid) {
    const element = document.createElement("pre");
    element.className = `output ${kind}`;
    element.dataset.testid = testid;
    element.textContent = capped(text.replace(ANSI, ""));
    return element;
  }

  function note(text) {
    const element = document.createElement("p");
    element.className = "output note";
    element.dataset.testid = "output-cut";
    element.textContent = text;
    return element;
  }

  function image(mime, encoded) {
    const compact = encoded.replace(/\s+/g, "");
    if (compact.length > MAX_IMAGE_BASE64) return note("An image over 4 MiB is not shown.");
    if (!BASE64.test(compact)) return null;
    const element = document.createElement("img");
    element.className = "output image";
    element.alt = "Cell output";
    element.dataset.testid = "output-image";
    element.src = `data:${mime};base64,${compact}`;
    return element;
  }

  function frame(html) {
    const element = document.createElement("iframe");
    element.setAttribute("sandbox", sandbox); // before srcdoc: the sandbox applies from the first load
    element.className = "output html";
    element.title = "HTML output";
    element.dataset.testid = "output-html";
    element.srcdoc = html;
    return element;
  }

  function rich(data) {
    if (typeof data !== "object" || data === null) return null;
    const html = joined(data["text/html"]);
    if (html && html.length <= MAX_HTML) return frame(html);
    for (const mime of ["image/png", "image/jpeg"]) {
      const shown = mime in data ? image(mime, joined(data[mime])) : null;
      if (shown) return shown;
    }
    const text = joined(data["text/markdown"]) || joined(data["text/plain"]);
    return text ? pre("text", text, "output-text") : null;
  }

  function render(output) {
    switch (output?.output_type) {
      case "stream":
        return pre(`stream ${output.name === "stderr" ? "stderr" : "stdout"}`, joined(output.text), "output-stream");
      case "error": {
        const lines = Array.isArray(output.traceback) ? output.traceback.filter((line) => typeof line === "string") : [];
        return pre("error", lines.join("\n") || `${output.ename}: ${output.evalue}`, "output-error");
      }
      case "execute_result":
      case "display_data":
        return rich(output.data);
      default:
        return null;
    }
  }

  function showOutputs(cell, outputs) {
    const box = cell.querySelector(".cell-outputs");
    const list = Array.isArray(outputs) ? outputs : [];
    const shown = list.slice(0, MAX_OUTPUTS).map(render).filter(Boolean);
    if (list.length > MAX_OUTPUTS) shown.push(note(`Showing the first ${MAX_OUTPUTS} of ${list.length} outputs.`));
    box.replaceChildren(...shown);
  }

  // --- running ---------------------------------------------------------------------------------------

  function setStatus(message, kind = "info") {
    status.textContent = message;
    status.dataset.kind = kind;
  }

  function setBusy(running) {
    busy = running;
    notebook.dataset.busy = running ? "true" : "false";
    interruptButton.hidden = !running;
    runAllButton.disabled = running;
    for (const button of notebook.querySelectorAll("[data-action=run-cell]")) button.disabled = running;
  }

  /** Runs one cell; true when it finished without an error. */
  async function runCell(cell) {
    const prompt = cell.querySelector("[data-testid=prompt]");
    const index = Number(cell.dataset.index);
    cell.dataset.state = "running";
    prompt.textContent = "[*]";
    setStatus(`Running cell ${index + 1}\u2026`);
    try {
      const result = await execute(index);
      showOutputs(cell, result.outputs);
      prompt.textContent = `[${result.execution_count ?? " "}]`;
      const failed = result.status === "error";
      cell.dataset.state = failed ? "failed" : "done";
      setStatus(failed ? `Cell ${index + 1} raised an error` : `Ran cell ${index + 1}`, failed ? "error" : "info");
      return !failed;
    } catch (error) {
      cell.dataset.state = "failed";
      prompt.textContent = "[ ]";
      setStatus(`Cell ${index + 1} did not run: ${error.message}`, "error");
      return false;
    }
  }

  async function run(cells) {
    if (busy) return;
    setBusy(true);
    stopAll = false;
    try {
      for (const cell of cells) {
        if (stopAll || !(await runCell(cell))) break;
      }
    } finally {
      setBusy(false);
    }
  }

  async function interrupt() {
    if (!session) return;
    stopAll = true;
    setStatus("Interrupting\u2026");
    try {
      await app.api("POST", `/notebooks/${await session}/interrupt`);
    } catch (error) {
      setStatus(`Could not interrupt: ${error.message}`, "error");
    }
  }

  notebook.addEventListener("click", (event) => {
    const control = event.target.closest("[data-action]");
    if (!control) return;
    if (control.dataset.action === "run-cell") run([control.closest("[data-testid=cell]")]);
    else if (control.dataset.action === "run-all") run([...notebook.querySelectorAll("[data-kind=code]")]);
    else if (control.dataset.action === "interrupt") interrupt();
  });
  window.addEventListener("pagehide", stopKernel);
})();
