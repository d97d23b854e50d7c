// In-app dialogs on the native <dialog> element, instead of the browser's prompt()/confirm()/alert():
// styled and dark like the page, labelled for screen readers, Escape cancels, Tab stays inside,
// and a name is checked inline (the server's reason shown under the field when it refuses).
//
//   opentermd.dialogs.confirm({title, message, confirmLabel, danger})        -> Promise<boolean>
//   opentermd.dialogs.alert({title, message})                               -> Promise<void>
//   opentermd.dialogs.prompt({title, label, value, confirmLabel, check, submit, selectStem})
//       -> Promise<string | null>; check(value) returns a reason to refuse ("" = fine); submit(value)
//          is awaited with the dialog open: if it throws, its message is shown and the dialog stays
//   opentermd.dialogs.choose({title, message, choices: [{value, label, danger}], applyToAll})
//       -> Promise<{value, all} | null>
//   opentermd.dialogs.open({title, testid, build(body, close), buttons: [{label, value, primary,
//       danger, run}]}) -> Promise<value | null>, the general form the others are made of
"use strict";

(() => {
  let counter = 0;

  function element(tag, attributes = {}, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "className") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const FOCUSABLE = "a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select, textarea, [tabindex]:not([tabindex='-1'])";

  /** Tab and Shift+Tab cycle inside the dialog (showModal makes the page inert, not the browser's UI). */
  function trapFocus(dialog, event) {
    if (event.key !== "Tab") return;
    const items = [...dialog.querySelectorAll(FOCUSABLE)].filter((item) => item.offsetParent !== null);
    if (!items.length) return;
    const first = items[0];
    const last = items[items.length - 1];
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  }

  function open({ title, message, testid = "dialog", build, buttons = [], wide = false }) {
    return new Promise((resolve) => {
      const id = `dialog-${++counter}`;
      const before = document.activeElement;
      const dialog = element("dialog", { className: "app-dialog" + (wide ? " wide" : ""), "aria-labelledby": `${id}-title`,
        "data-testid": testid });
      const form = element("form", { method: "dialog", novalidate: true });
      form.append(element("h2", { id: `${id}-title` }, title));
      if (message) {
        const text = element("p", { id: `${id}-message`, className: "dialog-message" }, message);
        dialog.setAttribute("aria-describedby", text.id);
        form.append(text);
      }
      const body = element("div", { className: "dialog-body" });
      form.append(body);
      const problem = element("p", { className: "dialog-error", role: "alert", "data-testid": "dialog-error", id: `${id}-error` });
      problem.hidden = true;
      form.append(problem);
      const row = element("div", { className: "dialog-buttons" });
      form.append(row);
      dialog.append(form);

      let settled = false;
      const close = (value) => {
        if (settled) return;
        settled = true;
        dialog.close();
        dialog.remove();
        if (before && before.isConnected && typeof before.focus === "function") before.focus();
        resolve(value);
      };
      const fail = (reason) => {
        problem.textContent = reason || "";
        problem.hidden = !reason;
        body.querySelectorAll("input[type=text]").forEach((input) => {
          input.setAttribute("aria-invalid", reason ? "true" : "false");
          if (reason) input.setAttribute("aria-describedby", problem.id);
        });
      };
      const context = { close, fail, dialog, body };
      build?.(body, context);

      let primary = null;
      for (const spec of buttons) {
        const button = element("button", {
          type: spec.primary ? "submit" : "button",
          className: [spec.primary ? "primary" : "", spec.danger ? "danger" : ""].join(" ").trim() || undefined,
          "data-testid": spec.testid || `dialog-${String(spec.value ?? "cancel")}`,
          value: spec.value === undefined ? undefined : String(spec.value),
        }, spec.label);
        if (spec.primary) primary = { button, spec };
        else button.addEventListener("click", () => run(spec, button));
        row.append(button);
      }

      let busy = false;
      async function run(spec, button) {
        if (busy) return;
        if (!spec.run) return close(spec.value ?? null);
        busy = true;
        button.disabled = true;
        try {
          const outcome = await spec.run(context);
          if (outcome !== false) close(outcome === undefined || outcome === true ? (spec.value ?? true) : outcome);
        } catch (error) {
          fail(error?.message || String(error));
        } finally {
          busy = false;
          button.disabled = false;
        }
      }

      form.addEventListener("submit", (event) => {
        event.preventDefault();  // the dialog closes when we say so, after the work succeeded
        if (primary) run(primary.spec, primary.button);
      });
      dialog.addEventListener("cancel", (event) => {
        event.preventDefault();
        if (!busy) close(null);
      });
      dialog.addEventListener("keydown", (event) => trapFocus(dialog, event));
      document.body.append(dialog);
      dialog.showModal();
      const first = body.querySelector("input, select, textarea, button, a[href]") || primary?.button || row.querySelector("button");
      first?.focus();
    });
  }

  function confirm({ title = "Are you sure?", message, confirmLabel = "OK", cancelLabel = "Cancel", danger = false, testid = "confirm-dialog" } = {}) {
    return open({ title, message, testid, buttons: [
      { label: cancelLabel, value: false, testid: "dialog-cancel" },
      { label: confirmLabel, value: true, primary: true, danger, testid: "dialog-confirm" },
    ] }).then((value) => value === true);
  }

  function alert({ title = "Notice", message, testid = "alert-dialog" } = {}) {
    return open({ title, message, testid, buttons: [{ label: "OK", value: true, primary: true, testid: "dialog-confirm" }] })
      .then(() => undefined);
  }

  function prompt({ title, label, value = "", confirmLabel = "OK", check, submit, selectStem = false, testid = "prompt-dialog" }) {
    let input;
    return open({
      title, testid,
      build(body, { fail }) {
        const id = `prompt-${++counter}`;
        body.append(element("label", { for: id }, label));
        input = element("input", { type: "text", id, "data-testid": "dialog-input", autocomplete: "off", spellcheck: "false" });
        input.value = value;
        body.append(input);
        input.addEventListener("input", () => fail(check ? check(input.value) : ""));
        // Select the name without its extension, as file managers do, so typing keeps ".txt".
        requestAnimationFrame(() => {
          const dot = input.value.lastIndexOf(".");
          if (selectStem && dot > 0) input.setSelectionRange(0, dot);
          else input.select();
        });
      },
      buttons: [
        { label: "Cancel", value: null, testid: "dialog-cancel" },
        { label: confirmLabel, primary: true, testid: "dialog-confirm", async run({ fail }) {
          const reason = check ? check(input.value) : "";
          if (reason) { fail(reason); return false; }
          if (submit) await submit(input.value);
          return input.value;
        } },
      ],
    });
  }

  function choose({ title, message, choices, applyToAll, testid = "choose-dialog" }) {
    let all = null;
    return open({
      title, message, testid,
      build(body) {
        if (!applyToAll) return;
        const id = `all-${++counter}`;
        const wrap = element("label", { className: "dialog-check", for: id });
        all = element("input", { type: "checkbox", id, "data-testid": "dialog-apply-all" });
        wrap.append(all, document.createTextNode(" " + applyToAll));
        body.append(wrap);
      },
      buttons: [
        { label: "Cancel", value: null, testid: "dialog-cancel" },
        ...choices.map((choice, index) => ({ label: choice.label, danger: choice.danger, testid: `dialog-${choice.value}`,
          primary: index === choices.length - 1 && !choice.danger ? true : undefined,
          run: () => ({ value: choice.value, all: Boolean(all?.checked) }) })),
      ],
    });
  }

  /** The reason a name cannot be a single file name, or "" (the server checks again: it decides). */
  function nameProblem(name) {
    if (!name || !name.trim()) return "A name is needed.";
    if (name === "." || name === "..") return `"${name}" is not a file name.`;
    if (name.includes("/")) return "A name cannot contain \"/\" (use Move to put it in another folder).";
    if (name.includes("\0")) return "A name cannot contain a NUL character.";
    return "";
  }

  window.opentermd = Object.assign(window.opentermd || {}, {
    dialogs: { open, confirm, alert, prompt, choose, nameProblem, element },
  });
})();
