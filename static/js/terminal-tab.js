// One tab of the terminal page: an xterm.js terminal on one session of /api/terminals.
//
// It creates a detachable session (in a folder, when asked) or attaches to a given one (the server
// replays the recent output first), reconnects with backoff after a drop, and keeps its own state:
// the status ("connected", "reconnecting"...), a notice with the buttons it offers, its title. The
// page (terminal.js) shows the active tab's state and owns the tab strip, the keys and the settings.
//
// Protocol: keystrokes go as binary frames, text frames are only {"type":"resize"} and {"type":"ping"};
// output comes as binary. Close codes: 1000 the shell exited, 4001 bad auth, 4004 unknown or ended
// session, 4009 attached elsewhere (another browser tab holds it: never taken from it); anything
// else is a drop, and the tab reconnects.
//
// Needs /static/vendor/xterm/xterm.js (window.OpentermdXterm) and terminal-styles.js.
"use strict";

(() => {
  const { Terminal, FitAddon, WebLinksAddon, SearchAddon, Unicode11Addon, ClipboardAddon } = window.OpentermdXterm;

  const encoder = new TextEncoder();
  const PING_MS = 25000;
  const MAX_BACKOFF_S = 15;
  // Reports xterm answers to queries in the output (device attributes, cursor position, modes,
  // colours). Replayed output holds old queries: their answers must not be typed into today's shell.
  const REPORT = /^\x1b(\[[?>=]?[\d;]*(\$y|[cnRt])|\][\d;]+rgb:[^\x07\x1b]*(\x07|\x1b\\)|P[^\x1b]*\x1b\\)$/;
  const REPLAY_WINDOW_MS = 1000;
  const FONT_FAMILY = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'Liberation Mono', 'DejaVu Sans Mono', monospace";
  //: OSC 52 writes larger than this (base64) are ignored: a runaway `cat` must not fill the clipboard.
  const OSC52_MAX_BASE64 = 1024 * 1024;

  /**
   * OSC 52 through xterm's clipboard add-on, writes only: a program may put text on the clipboard
   * (`printf '\e]52;c;%s\a' "$(printf hi | base64)"`), but never read it (`\e]52;c;?\a` would hand
   * whatever the user copied elsewhere to anything that prints to this terminal), and not past a cap.
   * The guard is registered after the add-on, so xterm asks it first; `true` means handled.
   */
  function loadOsc52(term, writeClipboard) {
    const provider = {
      readText: () => "",
      writeText: (selection, text) => (selection === "c" || selection === "") && text ? writeClipboard(text) : undefined,
    };
    term.loadAddon(new ClipboardAddon(undefined, provider));
    term.parser.registerOscHandler(52, (data) => {
      const payload = data.slice(data.indexOf(";") + 1);
      return data.indexOf(";") < 0 || payload.includes("?") || payload.length > OSC52_MAX_BASE64;
    });
  }

  class TerminalTab {
    /**
     * options: { sessionId (attach to it) or cwd (a new session there), connection ({api, openSocket,
     * embed, token}), settings ({fontSize, theme: {...}}), onChange(tab), onExit(tab), onKey(event, tab)
     * -> false to keep a key from the shell, writeClipboard(text), onSelection(tab) }
     */
    constructor(container, options) {
      this.options = options;
      this.connection = options.connection;
      this.sessionId = options.sessionId || null;
      this.cwd = options.cwd || "";
      this.title = "";
      this.state = { status: "connecting", label: "Connecting…", notice: null };
      this.host = document.createElement("div");
      this.host.className = "terminal-pane";
      this.host.dataset.testid = "terminal-pane";
      container.append(this.host);

      this.term = new Terminal({
        cursorBlink: true,
        fontFamily: FONT_FAMILY,
        fontSize: options.settings.fontSize,
        scrollback: 10000,
        theme: options.settings.theme,
        allowProposedApi: true,  // The search add-on's decorations and unicode11 are proposed APIs.
      });
      this.fit = new FitAddon();
      this.search = new SearchAddon();
      this.term.loadAddon(this.fit);
      this.term.loadAddon(this.search);
      this.term.loadAddon(new WebLinksAddon());
      this.term.loadAddon(new Unicode11Addon());
      this.term.unicode.activeVersion = "11";  // Emoji and CJK take two cells, as the shell thinks.
      loadOsc52(this.term, options.writeClipboard);
      window.opentermd.openUnderCsp(this.term, this.host);
      this.term.attachCustomKeyEventHandler((event) => options.onKey(event, this));
      this.term.onTitleChange((title) => { this.title = title; this.changed(); });
      this.term.onSelectionChange(() => options.onSelection(this));
      this._wire();

      this.socket = null;
      this.failures = 0;       // Consecutive drops: the backoff is 1, 2, 4 ... 15 s.
      this.busyRetries = 0;    // 4009 right after a reload: the old page's socket may not be closed yet.
      this.retryTimer = this.countdownTimer = this.pingTimer = null;
      this.pendingNote = "";   // Written once the next attach has reset the screen.
      this.replaying = 0;      // Replayed frames still being parsed.
      this.lastSize = "";
      this.ended = false;      // The shell exited or the session is gone: closing the tab asks nothing.
    }

    get connected() { return Boolean(this.socket && this.socket.readyState === WebSocket.OPEN); }

    changed() { this.options.onChange(this); }

    setStatus(status, label) {
      this.state.status = status;
      this.state.label = label;
      this.changed();
    }

    /** A message over the terminal with some of its buttons: "retry", "new", "login". */
    showNotice(message, buttons = []) {
      this.state.notice = { message, buttons };
      this.changed();
    }

    hideNotice() {
      if (!this.state.notice) return;
      this.state.notice = null;
      this.changed();
    }

    grey(text) { this.term.write(`\r\n\x1b[2m${text}\x1b[0m\r\n`); }

    send(data) {
      if (this.connected) this.socket.send(data);
    }

    _wire() {
      this.term.onData((data) => {
        if (this.replaying && REPORT.test(data)) return;
        this.send(encoder.encode(data));
      });
      this.term.onBinary((data) => this.send(Uint8Array.from(data, (char) => char.charCodeAt(0) & 0xff)));
      this.term.onResize(() => { if (`${this.term.cols}x${this.term.rows}` !== this.lastSize) this.sendResize(); });
    }

    sendResize() {
      this.lastSize = `${this.term.cols}x${this.term.rows}`;
      this.send(JSON.stringify({ type: "resize", cols: this.term.cols, rows: this.term.rows }));
    }

    /** Fit the terminal to its box, when it is shown (a hidden tab has no size). */
    refit() {
      if (this.host.clientWidth > 0 && this.host.clientHeight > 0) this.fit.fit();
    }

    cancelRetry() {
      clearTimeout(this.retryTimer);
      clearInterval(this.countdownTimer);
      this.retryTimer = this.countdownTimer = null;
    }

    // --- connecting, attaching, reconnecting -------------------------------------------------------

    /** Attach to this tab's session, or to a new one when it has none (or it has ended). */
    async start() {
      this.cancelRetry();
      this.setStatus(this.failures ? "reconnecting" : "connecting", this.failures ? "Reconnecting…" : "Connecting…");
      if (this.connection.embed && !this.connection.token) {
        this.setStatus("disconnected", "No token");
        this.showNotice("Open this page as /terminal/embed#token=<API key>.");
        return;
      }
      try {
        if (this.sessionId && !(await this.exists(this.sessionId))) {
          this.pendingNote = "[The previous session has ended; this is a new one]";
          this.sessionId = null;
        }
        if (!this.sessionId) {
          this.sessionId = await this.create();
          this.cwd = "";  // Only the first session of a tab opened "here" starts there.
          this.changed();
        }
        this.attach(this.sessionId);
      } catch (error) {
        this.failed(error);
      }
    }

    async exists(id) {
      try {
        await this.connection.api("GET", `/api/terminals/${encodeURIComponent(id)}`);
        return true;
      } catch (error) {
        if (error.status === 404) return false;
        throw error;
      }
    }

    async create() {
      const json = { cols: this.term.cols, rows: this.term.rows, detach: true, ...(this.cwd ? { cwd: this.cwd } : {}) };
      const reply = await this.connection.api("POST", "/api/terminals", { json });
      return (await reply.json()).id;
    }

    failed(error) {
      if (error.status === 401 || error.status === 403) {
        this.refused();
      } else if (error.status === 429) {
        this.setStatus("disconnected", "Too many sessions");
        this.showNotice("The daemon's limit of terminal sessions is reached: end one (type exit there) and retry.", ["retry"]);
      } else if (error.status && error.status < 500) {
        this.setStatus("disconnected", "Error");
        this.showNotice(`Could not start a terminal: ${error.message}`, ["retry"]);
      } else if (error.status === 503) {
        this.setStatus("disconnected", "Unavailable");
        this.showNotice("No terminal is available on the server right now (out of PTYs?).", ["retry"]);
      } else {
        this.reconnectLater();  // The server is unreachable or restarting: keep trying.
      }
    }

    refused() {
      this.setStatus("disconnected", "Not authorized");
      if (this.connection.embed) this.showNotice("The token was refused.", ["retry"]);
      else this.showNotice("Your login has expired.", ["login"]);
    }

    attach(id) {
      const { socket: ws, authFrame } = this.connection.openSocket(id);
      ws.binaryType = "arraybuffer";
      this.socket = ws;
      this.sessionId = id;
      let openedAt = 0;
      let attached = false;  // The first frame came: the server took us (it refuses with a close after the open).

      ws.onopen = () => {
        if (ws !== this.socket) return;
        openedAt = performance.now();
        if (authFrame) ws.send(JSON.stringify({ type: "auth", token: this.connection.token }));
        this.state.notice = null;
        this.setStatus("connected", "Connected");
        this.refit();
        this.sendResize();
        clearInterval(this.pingTimer);
        this.pingTimer = setInterval(() => this.send(JSON.stringify({ type: "ping" })), PING_MS);
        this.options.onOpen?.(this);
      };

      ws.onmessage = (event) => {
        if (ws !== this.socket) return;
        if (!attached) {
          attached = true;
          this.failures = this.busyRetries = 0;
          this.term.reset();  // The server replays the recent output first: it redraws the screen from scratch.
          if (this.pendingNote) this.grey(this.pendingNote);
          this.pendingNote = "";
        }
        if (typeof event.data === "string") {
          if (!event.data.startsWith("{")) this.term.write(event.data);  // No control messages come this way yet.
          return;
        }
        const bytes = new Uint8Array(event.data);
        if (performance.now() - openedAt < REPLAY_WINDOW_MS) {
          this.replaying += 1;
          this.term.write(bytes, () => { this.replaying -= 1; });
        } else {
          this.term.write(bytes);
        }
      };

      ws.onclose = (event) => {
        if (ws !== this.socket) return;
        this.socket = null;
        clearInterval(this.pingTimer);
        this.closed(event.code);
      };
    }

    closed(code) {
      if (code === 1000) {
        this.ended = true;
        this.sessionId = null;
        this.grey("[Process exited]");
        this.setStatus("disconnected", "Process exited");
        this.showNotice("The shell has exited.", ["new"]);
        this.options.onExit(this);
      } else if (code === 4001) {
        this.refused();
      } else if (code === 4004) {
        this.ended = true;
        this.sessionId = null;
        this.setStatus("disconnected", "Session ended");
        this.showNotice("This terminal session has ended or does not exist.", ["new"]);
        this.options.onExit(this);
      } else if (code === 4009 && this.busyRetries < 4) {
        // Likely this tab's previous page (a reload), whose socket the server has not seen close yet.
        this.busyRetries += 1;
        this.setStatus("connecting", "Connecting…");
        this.retryTimer = setTimeout(() => this.attach(this.sessionId), 250 * this.busyRetries);
      } else if (code === 4009) {
        this.busyRetries = 0;
        this.setStatus("disconnected", "Open elsewhere");
        this.showNotice("This session is attached in another browser tab or window. Close it there, then retry, "
          + "or start a new session here.", ["retry", "new"]);
      } else {
        this.reconnectLater();
      }
    }

    reconnectLater() {
      this.cancelRetry();
      let remaining = Math.min(MAX_BACKOFF_S, 2 ** this.failures);
      this.failures += 1;
      const show = () => this.setStatus("reconnecting", `Reconnecting in ${remaining} s`);
      this.state.notice = { message: "The connection dropped.", buttons: ["retry"] };
      show();
      this.countdownTimer = setInterval(() => {
        remaining -= 1;
        if (remaining > 0) show();
      }, 1000);
      this.retryTimer = setTimeout(() => this.start(), remaining * 1000);
    }

    /** Stop using the current socket without any of its close handling: the session stays (detached). */
    detach() {
      this.cancelRetry();
      clearInterval(this.pingTimer);
      if (this.socket) {
        const old = this.socket;
        this.socket = null;
        old.close(1000);
      }
    }

    /** End this tab's shell (if any) on the server. */
    async end() {
      const id = this.sessionId;
      this.detach();
      this.sessionId = null;
      if (id) await this.connection.api("DELETE", `/api/terminals/${encodeURIComponent(id)}`).catch(() => {});
    }

    /** A new shell in this tab: the old one ends. */
    async restart() {
      await this.end();
      this.ended = false;
      this.failures = this.busyRetries = 0;
      this.term.reset();
      this.start();
    }

    retry() {
      this.detach();
      this.failures = this.busyRetries = 0;
      this.start();
    }

    applySettings(settings) {
      this.term.options.fontSize = settings.fontSize;
      this.term.options.theme = settings.theme;
      this.refit();
    }

    dispose() {
      this.detach();
      this.term.dispose();
      this.host.remove();
    }
  }

  window.opentermd = Object.assign(window.opentermd || {}, { TerminalTab });
})();
