// The terminal page (/terminal, and /terminal/embed#token=...): tabs of xterm.js terminals, each on a
// session of /api/terminals (terminal-tab.js), with the page's keys, clipboard, settings and the list
// of sessions to re-attach.
//
// The tabs' session ids are kept in sessionStorage, so a reload re-attaches every tab (the server
// replays the recent output); a second browser tab starts its own. A session attached elsewhere is
// never taken from there: the list says "attached elsewhere", and attaching is refused (4009).
// Settings (font size, theme, copy on select) are kept in localStorage for every page.
//
// Needs api.js, dialogs.js, /static/vendor/xterm/xterm.js, terminal-styles.js and terminal-tab.js.
"use strict";

(() => {
  const app = document.getElementById("terminal-app");
  const container = document.getElementById("terminal");
  if (!app || !container || !window.OpentermdXterm || !window.opentermd?.TerminalTab) return;
  const { TerminalTab, dialogs, toast } = window.opentermd;
  const embed = app.dataset.mode === "embed";

  // --- settings: font size, theme, copy on select ------------------------------------------------

  const SETTINGS_KEY = "opentermd.terminal.settings";
  const FONT_MIN = 8;
  const FONT_MAX = 32;
  const darkQuery = matchMedia("(prefers-color-scheme: dark)");
  const defaults = () => ({ fontSize: matchMedia("(max-width: 640px)").matches ? 13 : 14, theme: "system", copyOnSelect: false });

  function loadSettings() {
    let saved = {};
    try { saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") || {}; } catch (_) { /* unreadable: defaults */ }
    const settings = { ...defaults(), ...saved };
    settings.fontSize = clampFont(settings.fontSize);
    if (!["system", "light", "dark"].includes(settings.theme)) settings.theme = "system";
    settings.copyOnSelect = settings.copyOnSelect === true;
    return settings;
  }

  const clampFont = (size) => Math.min(FONT_MAX, Math.max(FONT_MIN, Math.round(Number(size)) || defaults().fontSize));
  const settings = loadSettings();

  const PALETTES = {
    light: {
      black: "#24292f", red: "#cf222e", green: "#116329", yellow: "#4d2d00", blue: "#0969da", magenta: "#8250df",
      cyan: "#1b7c83", white: "#6e7781", brightBlack: "#57606a", brightRed: "#a40e26", brightGreen: "#1a7f37",
      brightYellow: "#633c01", brightBlue: "#218bff", brightMagenta: "#a475f9", brightCyan: "#3192aa",
      brightWhite: "#8c959f", selectionBackground: "rgba(9, 105, 218, 0.25)",
    },
    dark: {
      black: "#484f58", red: "#ff7b72", green: "#3fb950", yellow: "#d29922", blue: "#58a6ff", magenta: "#bc8cff",
      cyan: "#39c5cf", white: "#b1bac4", brightBlack: "#6e7681", brightRed: "#ffa198", brightGreen: "#56d364",
      brightYellow: "#e3b341", brightBlue: "#79c0ff", brightMagenta: "#d2a8ff", brightCyan: "#56d4dd",
      brightWhite: "#ffffff", selectionBackground: "rgba(68, 147, 248, 0.35)",
    },
  };

  const isDark = () => settings.theme === "dark" || (settings.theme === "system" && darkQuery.matches);

  /** The page's own background and text colours (app.css, terminal.css), with an ANSI palette readable on them. */
  function xtermTheme() {
    const dark = isDark();
    const css = getComputedStyle(document.documentElement);
    const background = css.getPropertyValue("--bg").trim() || (dark ? "#0d1117" : "#ffffff");
    const foreground = css.getPropertyValue("--fg").trim() || (dark ? "#e6edf3" : "#1f2328");
    return { ...PALETTES[dark ? "dark" : "light"], background, foreground, cursor: foreground, cursorAccent: background };
  }

  /** The page follows the chosen theme (terminal.css), then every terminal takes its colours. */
  function applySettings() {
    if (settings.theme === "system") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = settings.theme;
    const view = { fontSize: settings.fontSize, theme: xtermTheme() };
    tabs.forEach((tab) => tab.applySettings(view));
    settingsForm.elements.fontSize.value = String(settings.fontSize);
    settingsForm.elements.theme.value = settings.theme;
    settingsForm.elements.copyOnSelect.checked = settings.copyOnSelect;
  }

  function changeSettings(change) {
    Object.assign(settings, change);
    settings.fontSize = clampFont(settings.fontSize);
    try { localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings)); } catch (_) { /* private mode */ }
    applySettings();
  }

  const settingsForm = document.getElementById("terminal-settings-form");
  settingsForm.addEventListener("input", () => changeSettings({
    fontSize: settingsForm.elements.fontSize.value,
    theme: settingsForm.elements.theme.value,
    copyOnSelect: settingsForm.elements.copyOnSelect.checked,
  }));
  settingsForm.addEventListener("submit", (event) => event.preventDefault());
  darkQuery.addEventListener("change", applySettings);

  // --- the clipboard --------------------------------------------------------------------------------

  /** Put text on the clipboard: the Clipboard API where the page is a secure context, else the copy command. */
  async function writeClipboard(text) {
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        return;
      }
    } catch (_) { /* refused (no focus, no permission): the copy command may still work */ }
    const copied = (event) => {
      event.clipboardData.setData("text/plain", text);
      event.preventDefault();
    };
    document.addEventListener("copy", copied, { once: true, capture: true });
    const done = document.execCommand("copy");
    document.removeEventListener("copy", copied, { capture: true });
    if (!done) toast("The browser did not allow copying to the clipboard.", "error");
  }

  function copySelection(tab) {
    const text = tab.term.getSelection();
    if (text) writeClipboard(text);
  }

  /**
   * Ctrl+Shift+V: the browser's own paste (a paste event on xterm's text area, which xterm sends as a
   * bracketed paste) needs no permission; where the browser has no such key, the Clipboard API reads it.
   */
  let awaitingPaste = null;
  function pasteSoon(tab) {
    awaitingPaste = tab;
    setTimeout(async () => {
      if (awaitingPaste !== tab) return;
      awaitingPaste = null;
      try {
        const text = await navigator.clipboard.readText();
        if (text) tab.term.paste(text);
      } catch (_) {
        toast("The browser did not allow reading the clipboard: use Shift+Insert.", "error");
      }
    }, 0);
  }
  document.addEventListener("paste", () => { awaitingPaste = null; }, true);

  // --- connections ----------------------------------------------------------------------------------

  const token = embed ? new URLSearchParams(location.hash.slice(1)).get("token")?.trim() || "" : "";
  // A token travels as a WebSocket subprotocol only if it is an HTTP token; otherwise in an auth frame.
  const subprotocolSafe = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(token);
  const authHeaders = embed ? { Authorization: `Bearer ${token}` } : {};

  const connection = {
    embed,
    token,
    api: (method, url, options = {}) => window.opentermd.api(method, url,
      { ...options, headers: { ...authHeaders, ...(options.headers || {}) } }),
    openSocket(id) {
      const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/api/terminals/${encodeURIComponent(id)}`;
      if (embed && subprotocolSafe) {
        try {
          return { socket: new WebSocket(url, ["opentermd", `opentermd.token.${token}`]), authFrame: false };
        } catch (_) { /* the browser refused the protocol: fall back to the auth frame */ }
      }
      return { socket: new WebSocket(url), authFrame: embed };
    },
  };

  // --- tabs -------------------------------------------------------------------------------------------

  const STORAGE_KEY = embed ? "opentermd.terminal.embed" : "opentermd.terminal";
  const tabs = [];
  let active = null;

  /** This browser tab's sessions, in tab order (an older page kept one id as plain text). */
  function storedIds() {
    let raw = null;
    try { raw = sessionStorage.getItem(STORAGE_KEY); } catch (_) { return []; }
    if (!raw) return [];
    try {
      const ids = JSON.parse(raw);
      return Array.isArray(ids) ? ids.filter((id) => typeof id === "string" && id) : [];
    } catch (_) {
      return [raw];
    }
  }

  function persist() {
    const ids = tabs.map((tab) => tab.sessionId).filter(Boolean);
    try {
      if (ids.length) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(ids));
      else sessionStorage.removeItem(STORAGE_KEY);
      if (active?.sessionId) sessionStorage.setItem(`${STORAGE_KEY}.active`, active.sessionId);
    } catch (_) { /* private mode */ }
  }

  function openTab({ sessionId = null, cwd = "", activate = true } = {}) {
    const tab = new TerminalTab(container, {
      sessionId, cwd, connection, writeClipboard,
      settings: { fontSize: settings.fontSize, theme: xtermTheme() },
      onChange: tabChanged,
      onExit: tabChanged,
      onOpen: (opened) => { if (opened === active && (!embed || document.hasFocus())) opened.term.focus(); },
      onKey,
      onSelection: (selected) => { if (settings.copyOnSelect && selected === active) copySelection(selected); },
    });
    tabs.push(tab);
    if (activate || !active) activate_(tab);
    else tab.host.hidden = true;
    tab.start();
    return tab;
  }

  function activate_(tab) {
    active = tab;
    for (const other of tabs) other.host.hidden = other !== tab;
    renderTabs();
    showState();
    tab.refit();
    tab.term.focus();
    persist();
  }

  function tabChanged(tab) {
    persist();
    renderTabs();
    if (tab === active) showState();
  }

  const tabList = document.getElementById("terminal-tabs");

  function tabName(tab) {
    const number = tabs.indexOf(tab) + 1;
    return tab.title ? `${number}: ${tab.title}` : `Shell ${number}`;
  }

  function renderTabs() {
    const buttons = tabs.map((tab) => {
      const item = document.createElement("span");
      item.className = "terminal-tab";
      item.dataset.state = tab.state.status;
      const select = document.createElement("button");
      select.type = "button";
      // A group of buttons, not an ARIA tablist: a tablist may hold only tabs, and each tab has a close button.
      if (tab === active) select.setAttribute("aria-current", "true");
      select.dataset.testid = "terminal-tab";
      select.className = "select";
      select.textContent = tabName(tab);
      select.title = tab.sessionId ? `Session ${tab.sessionId}` : "";
      select.addEventListener("click", () => activate_(tab));
      const close = document.createElement("button");
      close.type = "button";
      close.className = "close";
      close.dataset.testid = "terminal-tab-close";
      close.setAttribute("aria-label", `Close ${tabName(tab)}`);
      close.textContent = "×";
      close.addEventListener("click", () => closeTab(tab));
      item.append(select, close);
      return item;
    });
    tabList.replaceChildren(...buttons);
  }

  /** Closing a tab whose shell still runs asks: keep it running (detached, in the sessions list) or end it. */
  async function closeTab(tab) {
    let choice = "detach";
    if (tab.sessionId && !tab.ended && dialogs) {
      const answer = await dialogs.choose({
        title: "Close this tab?",
        message: "Its shell can keep running (re-attach it later from Sessions), or end now.",
        testid: "terminal-close-dialog",
        choices: [{ value: "end", label: "End the shell", danger: true }, { value: "detach", label: "Keep running" }],
      });
      if (!answer) return;
      choice = answer.value;
    }
    if (choice === "end") await tab.end();
    else tab.detach();
    const index = tabs.indexOf(tab);
    tabs.splice(index, 1);
    tab.dispose();
    if (tab === active) {
      active = null;
      const next = tabs[Math.min(index, tabs.length - 1)];
      if (next) activate_(next);
    }
    persist();
    renderTabs();
    showState();
  }

  // --- the status bar and the notice (of the active tab) ---------------------------------------------

  const status = document.getElementById("terminal-status");
  const statusLabel = status.querySelector(".label");
  const sessionLabel = document.getElementById("terminal-session");
  const notice = document.getElementById("terminal-notice");
  const noticeMessage = document.getElementById("terminal-notice-message");

  function showState() {
    if (!active) {
      status.dataset.state = "disconnected";
      statusLabel.textContent = "No terminal";
      sessionLabel.textContent = "";
      setNotice({ message: "No terminal is open in this page.", buttons: ["open"] });
      document.title = "Terminal · opentermd";
      return;
    }
    status.dataset.state = active.state.status;
    statusLabel.textContent = active.state.label;
    sessionLabel.textContent = active.sessionId || "";
    sessionLabel.title = active.sessionId ? `Session ${active.sessionId}` : "";
    setNotice(active.state.notice);
    document.title = active.title ? `${active.title} · opentermd` : "Terminal · opentermd";
  }

  function setNotice(state) {
    const wasHidden = notice.hidden;
    notice.hidden = !state;
    if (state) {
      noticeMessage.textContent = state.message;
      for (const button of notice.querySelectorAll("[data-notice-button]")) {
        button.hidden = !state.buttons.includes(button.dataset.noticeButton);
      }
    }
    if (wasHidden !== notice.hidden) fitSoon();
  }

  // --- size -------------------------------------------------------------------------------------------

  let fitTimer = null;
  function fitSoon() {
    clearTimeout(fitTimer);
    fitTimer = setTimeout(() => active?.refit(), 100);
  }
  new ResizeObserver(fitSoon).observe(container);
  window.addEventListener("resize", fitSoon);

  // --- search (Ctrl+Shift+F) ----------------------------------------------------------------------------

  const searchForm = document.getElementById("terminal-search");
  const searchInput = document.getElementById("terminal-search-input");
  const searchCount = document.getElementById("terminal-search-count");
  const searchOptions = () => {
    const dark = isDark();
    return {
      decorations: {
        matchBackground: dark ? "#5a4a00" : "#fff1a8",
        activeMatchBackground: dark ? "#9e6a03" : "#f2cc60",
        matchOverviewRuler: "#d29922",
        activeMatchColorOverviewRuler: "#bf8700",
      },
    };
  };
  const searched = new WeakSet();  // Tabs whose search add-on reports to the count.

  function openSearch() {
    if (!active) return;
    const tab = active;
    if (!searched.has(tab)) {
      searched.add(tab);
      tab.search.onDidChangeResults(({ resultIndex, resultCount }) => {
        if (tab !== active) return;
        if (!searchInput.value) searchCount.textContent = "";
        else if (!resultCount) searchCount.textContent = "No matches";
        else if (resultIndex < 0) searchCount.textContent = `${resultCount}+ matches`;
        else searchCount.textContent = `${resultIndex + 1} of ${resultCount}`;
      });
    }
    const selection = tab.term.getSelection();
    if (selection && !selection.includes("\n")) searchInput.value = selection;
    searchForm.hidden = false;
    fitSoon();
    searchInput.focus();
    searchInput.select();
    if (searchInput.value) tab.search.findNext(searchInput.value, { ...searchOptions(), incremental: true });
  }

  function closeSearch() {
    tabs.forEach((tab) => tab.search.clearDecorations());
    searchForm.hidden = true;
    searchCount.textContent = "";
    fitSoon();
    active?.term.focus();
  }

  searchInput.addEventListener("input", () => {
    if (!active) return;
    if (searchInput.value) active.search.findNext(searchInput.value, { ...searchOptions(), incremental: true });
    else { active.search.clearDecorations(); searchCount.textContent = ""; }
  });
  searchInput.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      closeSearch();
    } else if (event.key === "Enter" && event.shiftKey) {
      event.preventDefault();
      active?.search.findPrevious(searchInput.value, searchOptions());
    }
  });
  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    active?.search.findNext(searchInput.value, searchOptions());
  });

  // --- the page's keys ------------------------------------------------------------------------------------

  const ctrlShift = (event, code) => event.ctrlKey && event.shiftKey && !event.altKey && !event.metaKey && event.code === code;
  const ctrlOnly = (event) => event.ctrlKey && !event.altKey && !event.metaKey;
  const FONT_KEYS = { Equal: 1, NumpadAdd: 1, Minus: -1, NumpadSubtract: -1, Digit0: 0, Numpad0: 0 };

  /** A page key, or null: Ctrl+Shift+F/C/V, Ctrl+= Ctrl+- Ctrl+0 (Ctrl+Insert and Shift+Insert stay the browser's). */
  function pageKey(event) {
    if (ctrlShift(event, "KeyF")) return "find";
    if (ctrlShift(event, "KeyC")) return "copy";
    if (ctrlShift(event, "KeyV")) return "paste";
    if (ctrlOnly(event) && event.code in FONT_KEYS && (event.code.startsWith("Numpad") || !event.shiftKey || event.code === "Equal")) {
      return "font";
    }
    return null;
  }

  function runKey(name, event, tab) {
    if (name === "paste") {
      pasteSoon(tab);  // No preventDefault: the browser's paste comes first.
      return;
    }
    event.preventDefault();
    if (name === "find") openSearch();
    else if (name === "copy") copySelection(tab);
    else if (name === "font") {
      const step = FONT_KEYS[event.code];
      changeSettings({ fontSize: step === 0 ? defaults().fontSize : settings.fontSize + step });
    }
  }

  /** xterm asks before sending a key to the shell: false keeps it from there. */
  function onKey(event, tab) {
    const name = pageKey(event);
    if (!name) return true;
    if (event.type === "keydown") runKey(name, event, tab);
    return false;
  }

  // Keys typed in a terminal are the shell's: the page's shortcuts (api.js/app.js blur a text field on
  // Escape, which would leave vim without its keyboard) must not see them.
  container.addEventListener("keydown", (event) => event.stopPropagation());
  document.addEventListener("keydown", (event) => {
    const name = pageKey(event);
    if ((name === "find" || name === "font") && !event.defaultPrevented && active) runKey(name, event, active);
  });

  // --- the sessions list -------------------------------------------------------------------------------------

  function sessionRow(session, close) {
    const { element } = dialogs;
    const row = element("li", { className: "terminal-session-row", "data-testid": "terminal-session-row",
      "data-session": session.id });
    const mine = tabs.find((tab) => tab.sessionId === session.id);
    const where = mine ? "in this page" : session.attached ? "attached elsewhere" : "detached";
    const started = new Date(session.created_at).toLocaleString();
    // The folder is cut at its start when long (its end says most): <bdi> keeps its own direction.
    const cwd = element("span", { className: "cwd", title: session.cwd || "" });
    cwd.append(element("bdi", {}, session.cwd || ""));
    row.append(element("span", { className: "id" }, session.id),
      element("span", { className: "where", "data-testid": "terminal-session-where" }, where),
      cwd, element("span", { className: "started" }, `started ${started}`));
    const button = (label, testid, run, danger = false) => {
      const control = element("button", { type: "button", "data-testid": testid, className: danger ? "danger" : undefined }, label);
      control.addEventListener("click", run);
      row.append(control);
    };
    if (mine) button("Show", "terminal-session-show", () => { close(null); activate_(mine); });
    else if (!session.attached) {
      button("Attach", "terminal-session-attach", () => { close(null); openTab({ sessionId: session.id }); });
      button("End", "terminal-session-end", async () => {
        await connection.api("DELETE", `/api/terminals/${encodeURIComponent(session.id)}`).catch(() => {});
        row.remove();
      }, true);
    }
    return row;
  }

  async function showSessions() {
    let sessions;
    try {
      sessions = await (await connection.api("GET", "/api/terminals")).json();
    } catch (error) {
      toast(`Could not list the sessions: ${error.message}`, "error");
      return;
    }
    await dialogs.open({
      title: "Terminal sessions",
      testid: "terminal-sessions",
      wide: true,
      build(body, { close }) {
        if (!sessions.length) {
          body.append(dialogs.element("p", { "data-testid": "terminal-sessions-empty" }, "No terminal sessions are running."));
          return;
        }
        const list = dialogs.element("ul", { className: "terminal-sessions" });
        list.append(...sessions.map((session) => sessionRow(session, close)));
        body.append(list);
      },
      buttons: [{ label: "Close", value: null, primary: true, testid: "dialog-close" }],
    });
  }

  // --- buttons, and the keys a phone keyboard lacks -----------------------------------------------------

  const KEYS = { esc: "\x1b", tab: "\t", "ctrl-c": "\x03", "ctrl-d": "\x04" };
  const ARROWS = { up: "A", down: "B", right: "C", left: "D" };
  const actions = {
    search: openSearch,
    "search-previous": () => active?.search.findPrevious(searchInput.value, searchOptions()),
    "search-close": closeSearch,
    "new-tab": () => openTab(),
    new: () => (active ? active.restart() : openTab()),
    open: () => openTab(),
    retry: () => active?.retry(),
    sessions: showSessions,
    "font-smaller": () => changeSettings({ fontSize: settings.fontSize - 1 }),
    "font-larger": () => changeSettings({ fontSize: settings.fontSize + 1 }),
  };

  app.addEventListener("click", (event) => {
    const control = event.target.closest("[data-terminal-action], [data-key]");
    if (!control) return;
    if (control.dataset.terminalAction) {
      actions[control.dataset.terminalAction]?.();
      return;
    }
    const key = control.dataset.key;
    if (!active) return;
    const sequence = key in ARROWS
      ? `\x1b${active.term.modes.applicationCursorKeysMode ? "O" : "["}${ARROWS[key]}`
      : KEYS[key];
    if (sequence) active.term.input(sequence, true);
  });
  // Tapping those keys must not take the focus (and the phone's keyboard) away from the terminal.
  app.querySelector(".terminal-keys").addEventListener("pointerdown", (event) => event.preventDefault());
  window.addEventListener("online", () => tabs.forEach((tab) => { if (tab.retryTimer && tab.failures) tab.start(); }));

  // For the browser tests (and the console): the active tab's xterm, and every tab's.
  Object.defineProperty(window, "__opentermdTerminal", { get: () => active?.term });
  Object.defineProperty(window, "__opentermdTabs", { get: () => tabs.map((tab) => ({ term: tab.term, sessionId: tab.sessionId })) });

  // --- start: this browser tab's sessions again, and a new one in ?cwd= when asked ---------------------

  applySettings();
  const ids = storedIds();
  let activeId = null;
  try { activeId = sessionStorage.getItem(`${STORAGE_KEY}.active`); } catch (_) { /* private mode */ }
  ids.forEach((sessionId) => openTab({ sessionId, activate: sessionId === activeId }));
  const cwd = app.dataset.cwd || "";
  if (cwd || !tabs.length) openTab({ cwd });
  if (cwd) history.replaceState(null, "", location.pathname + location.hash);  // A reload re-attaches, not opens again.
})();
