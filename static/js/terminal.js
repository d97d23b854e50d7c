// The terminal page (/terminal, and /terminal/embed#token=...): xterm.js on a session of /api/terminals.
//
// It creates a detachable session, or re-attaches to the one this tab had (its id is kept in
// sessionStorage, so a reload finds it and the server replays the recent output), follows the window's
// size, reconnects with backoff after a drop, and shows the connection state. Protocol: keystrokes go
// as binary frames, text frames are only {"type":"resize"} and {"type":"ping"}; output comes as binary.
// Close codes: 1000 the shell exited, 4001 bad auth, 4004 unknown or ended session, 4009 attached
// elsewhere; anything else is a drop, and the page reconnects.
//
// Needs /static/vendor/xterm/xterm.js (window.OpentermdXterm, bundled by the Makefile) and app.js.
"use strict";

(() => {
  const app = document.getElementById("terminal-app");
  const host = document.getElementById("terminal");
  if (!app || !host || !window.OpentermdXterm) return;
  const { Terminal, FitAddon, WebLinksAddon, SearchAddon } = window.OpentermdXterm;
  const embed = app.dataset.mode === "embed";

  // --- CSP: xterm's run-time styles, through the CSSOM ------------------------------------------
  //
  // The page allows styles from 'self' only. xterm 6 creates <style> elements at run time (the
  // scrollbar's colours, the DOM renderer's theme and cell size) and sets `style` attributes on
  // cells drawn in 24-bit colour (setAttribute), which that policy blocks. The CSSOM is not subject
  // to it: each <style> xterm asks for is an inert <template> whose text goes to a constructable
  // stylesheet adopted by the document, and a style attribute set from script goes to `style.cssText`,
  // which means exactly the same. No 'unsafe-inline' needed.
  function routeStylesThroughCssom() {
    if (!("adoptedStyleSheets" in document) || typeof CSSStyleSheet.prototype.replaceSync !== "function") return;
    const createElement = document.createElement;
    document.createElement = function (tagName, options) {
      if (String(tagName).toLowerCase() !== "style") return createElement.call(this, tagName, options);
      // Even an empty <style> in the document is a violation: an inert <template> stands in for it.
      const standIn = createElement.call(this, "template");
      standIn.dataset.adoptedStyle = "";
      adoptText(standIn);
      return standIn;
    };
    const setAttribute = Element.prototype.setAttribute;
    Element.prototype.setAttribute = function (name, value) {
      if (String(name).toLowerCase() === "style" && this.style instanceof CSSStyleDeclaration) {
        this.style.cssText = String(value);
        return;
      }
      setAttribute.call(this, name, value);
    };
  }

  function adoptText(element) {
    const sheet = new CSSStyleSheet();
    let text = "";
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    Object.defineProperty(element, "textContent", {
      configurable: true,
      get: () => text,
      set: (value) => {
        text = value == null ? "" : String(value);
        sheet.replaceSync(text);
      },
    });
    const remove = element.remove;
    element.remove = function () {
      document.adoptedStyleSheets = document.adoptedStyleSheets.filter((item) => item !== sheet);
      remove.call(this);
    };
  }

  routeStylesThroughCssom();

  // --- the terminal ---------------------------------------------------------------------------------

  const darkQuery = matchMedia("(prefers-color-scheme: dark)");
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

  /** The page's own background and text colours (app.css), with an ANSI palette readable on them. */
  function theme() {
    const dark = darkQuery.matches;
    const css = getComputedStyle(document.documentElement);
    const background = css.getPropertyValue("--bg").trim() || (dark ? "#0d1117" : "#ffffff");
    const foreground = css.getPropertyValue("--fg").trim() || (dark ? "#e6edf3" : "#1f2328");
    return { ...PALETTES[dark ? "dark" : "light"], background, foreground, cursor: foreground, cursorAccent: background };
  }

  const narrow = matchMedia("(max-width: 640px)").matches;
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, 'Liberation Mono', 'DejaVu Sans Mono', monospace",
    fontSize: narrow ? 13 : 14,
    scrollback: 10000,
    theme: theme(),
    allowProposedApi: true,  // The search addon highlights every match with decorations, a proposed API.
  });
  const fit = new FitAddon();
  const search = new SearchAddon();
  term.loadAddon(fit);
  term.loadAddon(search);
  term.loadAddon(new WebLinksAddon());
  term.open(host);
  fit.fit();
  darkQuery.addEventListener("change", () => { term.options.theme = theme(); });
  // Keys typed in the terminal are the shell's: the page's shortcuts (app.js blurs a text field on
  // Escape, which would leave vim without its keyboard) must not see them.
  host.addEventListener("keydown", (event) => event.stopPropagation());
  term.onTitleChange((title) => { document.title = title ? `${title} · opentermd` : "Terminal · opentermd"; });
  window.__opentermdTerminal = term;  // For the browser tests (and the console).

  // --- where the session lives, and how to reach it ---------------------------------------------

  const STORAGE_KEY = embed ? "opentermd.terminal.embed" : "opentermd.terminal";
  const token = embed ? new URLSearchParams(location.hash.slice(1)).get("token")?.trim() || "" : "";
  // A token travels as a WebSocket subprotocol only if it is an HTTP token; otherwise in an auth frame.
  const subprotocolSafe = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(token);
  const authHeaders = embed ? { Authorization: `Bearer ${token}` } : {};

  const stored = () => { try { return sessionStorage.getItem(STORAGE_KEY); } catch (_) { return null; } };
  const store = (id) => { try { sessionStorage.setItem(STORAGE_KEY, id); } catch (_) { /* private mode */ } };
  const forget = () => { try { sessionStorage.removeItem(STORAGE_KEY); } catch (_) { /* private mode */ } };

  const api = (method, url, options = {}) => window.opentermd.api(method, url,
    { ...options, headers: { ...authHeaders, ...(options.headers || {}) } });

  async function exists(id) {
    try {
      await api("GET", `/api/terminals/${encodeURIComponent(id)}`);
      return true;
    } catch (error) {
      if (error.status === 404) return false;
      throw error;
    }
  }

  async function create() {
    const reply = await api("POST", "/api/terminals", { json: { cols: term.cols, rows: term.rows, detach: true } });
    return (await reply.json()).id;
  }

  const socketUrl = (id) =>
    `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/api/terminals/${encodeURIComponent(id)}`;

  function openSocket(id) {
    const url = socketUrl(id);
    if (embed && subprotocolSafe) {
      try {
        return { socket: new WebSocket(url, ["opentermd", `opentermd.token.${token}`]), authFrame: false };
      } catch (_) { /* the browser refused the protocol: fall back to the auth frame */ }
    }
    return { socket: new WebSocket(url), authFrame: embed };
  }

  // --- the status bar and the notice ------------------------------------------------------------

  const status = document.getElementById("terminal-status");
  const statusLabel = status.querySelector(".label");
  const sessionLabel = document.getElementById("terminal-session");
  const notice = document.getElementById("terminal-notice");
  const noticeMessage = document.getElementById("terminal-notice-message");

  function setStatus(state, label) {
    status.dataset.state = state;
    statusLabel.textContent = label;
  }

  /** A message over the terminal with some of its buttons: "retry", "new", "login". */
  function showNotice(message, buttons = []) {
    noticeMessage.textContent = message;
    notice.querySelector('[data-terminal-action="retry"]').hidden = !buttons.includes("retry");
    notice.querySelector('[data-terminal-action="new"]').hidden = !buttons.includes("new");
    notice.querySelector('[data-testid="terminal-login"]').hidden = !buttons.includes("login");
    notice.hidden = false;
    fitSoon();
  }

  function hideNotice() {
    if (notice.hidden) return;
    notice.hidden = true;
    fitSoon();
  }

  const grey = (text) => term.write(`\r\n\x1b[2m${text}\x1b[0m\r\n`);

  // --- connecting, attaching, reconnecting --------------------------------------------------------

  const encoder = new TextEncoder();
  const PING_MS = 25000;
  const MAX_BACKOFF_S = 15;
  // Reports xterm answers to queries in the output (device attributes, cursor position, modes,
  // colours). Replayed output holds old queries: their answers must not be typed into today's shell.
  const REPORT = /^\x1b(\[[?>=]?[\d;]*(\$y|[cnRt])|\][\d;]+rgb:[^\x07\x1b]*(\x07|\x1b\\)|P[^\x1b]*\x1b\\)$/;
  const REPLAY_WINDOW_MS = 1000;

  let socket = null;
  let sessionId = null;
  let failures = 0;           // Consecutive drops: the backoff is 1, 2, 4 ... 15 s.
  let busyRetries = 0;        // 4009 right after a reload: the old page's socket may not be closed yet.
  let retryTimer = null;
  let countdownTimer = null;
  let pingTimer = null;
  let pendingNote = "";       // Written once the next attach has reset the screen.
  let replaying = 0;          // Replayed frames still being parsed.

  function send(data) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(data);
  }

  function cancelRetry() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = countdownTimer = null;
  }

  /** Attach to this tab's session, or to a new one when it has none (or it has ended). */
  async function start({ fresh = false } = {}) {
    cancelRetry();
    setStatus(failures ? "reconnecting" : "connecting", failures ? "Reconnecting…" : "Connecting…");
    if (embed && !token) {
      setStatus("disconnected", "No token");
      showNotice("Open this page as /terminal/embed#token=<API key>.");
      return;
    }
    try {
      let id = fresh ? null : stored();
      if (id && !(await exists(id))) {
        pendingNote = "[The previous session has ended; this is a new one]";
        id = null;
      }
      if (!id) {
        id = await create();
        store(id);
      }
      attach(id);
    } catch (error) {
      failed(error);
    }
  }

  function failed(error) {
    if (error.status === 401 || error.status === 403) {
      setStatus("disconnected", "Not authorized");
      if (embed) showNotice("The token was refused.", ["retry"]);
      else showNotice("Your login has expired.", ["login"]);
    } else if (error.status === 429) {
      setStatus("disconnected", "Too many sessions");
      showNotice("The daemon's limit of terminal sessions is reached: end one (type exit there) and retry.", ["retry"]);
    } else if (error.status && error.status < 500) {
      setStatus("disconnected", "Error");
      showNotice(`Could not start a terminal: ${error.message}`, ["retry"]);
    } else if (error.status === 503) {
      setStatus("disconnected", "Unavailable");
      showNotice("No terminal is available on the server right now (out of PTYs?).", ["retry"]);
    } else {
      reconnectLater();  // The server is unreachable or restarting: keep trying.
    }
  }

  function attach(id) {
    const { socket: ws, authFrame } = openSocket(id);
    ws.binaryType = "arraybuffer";
    socket = ws;
    sessionId = id;
    let openedAt = 0;
    let attached = false;  // The first frame came: the server took us (it refuses with a close after the open).

    ws.onopen = () => {
      if (ws !== socket) return;
      openedAt = performance.now();
      if (authFrame) ws.send(JSON.stringify({ type: "auth", token }));
      setStatus("connected", "Connected");
      sessionLabel.textContent = id;
      sessionLabel.title = `Session ${id}`;
      hideNotice();
      fit.fit();
      sendResize();
      clearInterval(pingTimer);
      pingTimer = setInterval(() => send(JSON.stringify({ type: "ping" })), PING_MS);
      if (!embed || document.hasFocus()) term.focus();
    };

    ws.onmessage = (event) => {
      if (ws !== socket) return;
      if (!attached) {
        attached = true;
        failures = busyRetries = 0;
        term.reset();  // The server replays the recent output first: it redraws the screen from scratch.
        if (pendingNote) grey(pendingNote);
        pendingNote = "";
      }
      if (typeof event.data === "string") {
        if (!event.data.startsWith("{")) term.write(event.data);  // No control messages come this way yet.
        return;
      }
      const bytes = new Uint8Array(event.data);
      if (performance.now() - openedAt < REPLAY_WINDOW_MS) {
        replaying += 1;
        term.write(bytes, () => { replaying -= 1; });
      } else {
        term.write(bytes);
      }
    };

    ws.onclose = (event) => {
      if (ws !== socket) return;
      socket = null;
      clearInterval(pingTimer);
      closed(event.code);
    };
  }

  function closed(code) {
    if (code === 1000) {
      forget();
      grey("[Process exited]");
      setStatus("disconnected", "Process exited");
      showNotice("The shell has exited.", ["new"]);
    } else if (code === 4001) {
      setStatus("disconnected", "Not authorized");
      if (embed) showNotice("The token was refused.", ["retry"]);
      else showNotice("Your login has expired.", ["login"]);
    } else if (code === 4004) {
      forget();
      setStatus("disconnected", "Session ended");
      showNotice("This terminal session has ended or does not exist.", ["new"]);
    } else if (code === 4009 && busyRetries < 4) {
      // Likely this tab's previous page (a reload), whose socket the server has not seen close yet.
      busyRetries += 1;
      setStatus("connecting", "Connecting…");
      retryTimer = setTimeout(() => attach(sessionId), 250 * busyRetries);
    } else if (code === 4009) {
      busyRetries = 0;
      setStatus("disconnected", "Open elsewhere");
      showNotice("This session is open in another tab or window. Close it there, then retry, or start a new session here.",
        ["retry", "new"]);
    } else {
      reconnectLater();
    }
  }

  function reconnectLater() {
    cancelRetry();
    let remaining = Math.min(MAX_BACKOFF_S, 2 ** failures);
    failures += 1;
    const show = () => setStatus("reconnecting", `Reconnecting in ${remaining} s`);
    show();
    showNotice("The connection dropped.", ["retry"]);
    countdownTimer = setInterval(() => {
      remaining -= 1;
      if (remaining > 0) show();
    }, 1000);
    retryTimer = setTimeout(() => start(), remaining * 1000);
  }

  /** Stop using the current socket without any of its close handling (we chose to leave it). */
  function abandon() {
    cancelRetry();
    clearInterval(pingTimer);
    if (socket) {
      const old = socket;
      socket = null;
      old.close(1000);
    }
  }

  async function newSession() {
    const connected = socket && socket.readyState === WebSocket.OPEN;
    if (connected && !confirm("End this shell and start a new one?")) return;
    const old = connected ? sessionId : null;
    abandon();
    forget();
    failures = busyRetries = 0;
    if (old) await api("DELETE", `/api/terminals/${encodeURIComponent(old)}`).catch(() => {});
    term.reset();
    start({ fresh: true });
  }

  function retry() {
    abandon();
    failures = busyRetries = 0;
    start();
  }

  window.addEventListener("online", () => { if (retryTimer && failures) start(); });

  // --- keystrokes and size --------------------------------------------------------------------------

  term.onData((data) => {
    if (replaying && REPORT.test(data)) return;
    send(encoder.encode(data));
  });
  term.onBinary((data) => send(Uint8Array.from(data, (char) => char.charCodeAt(0) & 0xff)));

  let lastSize = "";
  function sendResize() {
    lastSize = `${term.cols}x${term.rows}`;
    send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
  }
  term.onResize(() => { if (`${term.cols}x${term.rows}` !== lastSize) sendResize(); });

  let fitTimer = null;
  function fitSoon() {
    clearTimeout(fitTimer);
    fitTimer = setTimeout(() => {
      if (host.clientWidth > 0 && host.clientHeight > 0) fit.fit();
    }, 100);
  }
  new ResizeObserver(fitSoon).observe(host);
  window.addEventListener("resize", fitSoon);

  // --- search (Ctrl+Shift+F) --------------------------------------------------------------------

  const searchForm = document.getElementById("terminal-search");
  const searchInput = document.getElementById("terminal-search-input");
  const searchCount = document.getElementById("terminal-search-count");
  const searchOptions = () => {
    const dark = darkQuery.matches;
    return {
      decorations: {
        matchBackground: dark ? "#5a4a00" : "#fff1a8",
        activeMatchBackground: dark ? "#9e6a03" : "#f2cc60",
        matchOverviewRuler: "#d29922",
        activeMatchColorOverviewRuler: "#bf8700",
      },
    };
  };

  function openSearch() {
    const selection = term.getSelection();
    if (selection && !selection.includes("\n")) searchInput.value = selection;
    searchForm.hidden = false;
    fitSoon();
    searchInput.focus();
    searchInput.select();
    if (searchInput.value) search.findNext(searchInput.value, { ...searchOptions(), incremental: true });
  }

  function closeSearch() {
    search.clearDecorations();
    searchForm.hidden = true;
    searchCount.textContent = "";
    fitSoon();
    term.focus();
  }

  search.onDidChangeResults(({ resultIndex, resultCount }) => {
    if (!searchInput.value) searchCount.textContent = "";
    else if (!resultCount) searchCount.textContent = "No matches";
    else if (resultIndex < 0) searchCount.textContent = `${resultCount}+ matches`;
    else searchCount.textContent = `${resultIndex + 1} of ${resultCount}`;
  });

  searchInput.addEventListener("input", () => {
    if (searchInput.value) search.findNext(searchInput.value, { ...searchOptions(), incremental: true });
    else { search.clearDecorations(); searchCount.textContent = ""; }
  });
  searchInput.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      closeSearch();
    } else if (event.key === "Enter" && event.shiftKey) {
      event.preventDefault();
      search.findPrevious(searchInput.value, searchOptions());
    }
  });
  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    search.findNext(searchInput.value, searchOptions());
  });

  const isFindKey = (event) => event.ctrlKey && event.shiftKey && !event.altKey && event.code === "KeyF";
  term.attachCustomKeyEventHandler((event) => {
    if (!isFindKey(event)) return true;
    if (event.type === "keydown") {
      event.preventDefault();
      openSearch();
    }
    return false;
  });
  document.addEventListener("keydown", (event) => {
    if (isFindKey(event) && !event.defaultPrevented) {
      event.preventDefault();
      openSearch();
    }
  });

  // --- buttons, and the keys a phone keyboard lacks ---------------------------------------------

  const KEYS = { esc: "\x1b", tab: "\t", "ctrl-c": "\x03", "ctrl-d": "\x04" };
  const ARROWS = { up: "A", down: "B", right: "C", left: "D" };
  const actions = {
    search: openSearch,
    "search-previous": () => search.findPrevious(searchInput.value, searchOptions()),
    "search-close": closeSearch,
    new: newSession,
    retry,
  };

  app.addEventListener("click", (event) => {
    const control = event.target.closest("[data-terminal-action], [data-key]");
    if (!control) return;
    if (control.dataset.terminalAction) {
      actions[control.dataset.terminalAction]?.();
      return;
    }
    const key = control.dataset.key;
    const sequence = key in ARROWS
      ? `\x1b${term.modes.applicationCursorKeysMode ? "O" : "["}${ARROWS[key]}`
      : KEYS[key];
    if (sequence) term.input(sequence, true);
  });
  // Tapping those keys must not take the focus (and the phone's keyboard) away from the terminal.
  app.querySelector(".terminal-keys").addEventListener("pointerdown", (event) => event.preventDefault());

  start();
})();
