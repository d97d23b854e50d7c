// The changes page: Stage, Unstage and Discard per file, and Commit, through the hidden /git API
// (api.js adds the session's CSRF token). Discard asks first; the page reloads to show git's new state.
(() => {
  "use strict";

  const page = document.getElementById("changes");
  if (!page) return;
  const { json, toast, reload, dialogs } = window.opentermd;
  const repo = page.dataset.path;

  async function send(action, file) {
    await json("POST", `/git/${action}`, { json: { path: repo, files: [file] } });
  }

  async function discard(button, file) {
    const untracked = button.dataset.untracked === "true";
    const sure = await dialogs.confirm({
      title: `Discard the changes to ${file}?`,
      message: untracked
        ? "The file is not in git: it goes to the trash, from where it can be restored."
        : "Its current text goes to the file's history first, from where it can be restored.",
      confirmLabel: "Discard", danger: true,
    });
    if (sure) await send("discard", file);
    return sure;
  }

  page.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    const change = button?.closest("[data-file]");
    if (!button || !change) return;
    const file = change.dataset.file;
    button.disabled = true;
    try {
      const done = button.dataset.action === "discard" ? await discard(button, file) : (await send(button.dataset.action, file), true);
      if (done) reload();
    } catch (error) {
      toast(error.message, "error");
    } finally {
      button.disabled = false;
    }
  });

  const form = document.getElementById("commit-form");
  form?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = form.elements.namedItem("message").value;
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const reply = await json("POST", "/git/commit", { json: { path: repo, message } });
      toast(`Committed ${reply.committed.slice(0, 8)}`);
      reload();
    } catch (error) {
      toast(error.message, "error");
    } finally {
      submit.disabled = false;
    }
  });
})();
