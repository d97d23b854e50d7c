// One module for every request the pages make (loaded by base.html before any page script).
//
//   opentermd.request(method, url, options) -> Response, whatever its status (throws only when no
//                                              answer came: network failure, timeout, abort)
//   opentermd.api(method, url, options)     -> Response when 2xx, else throws an Error whose message is
//                                              readable (the server's `detail`) and which carries .status
//   opentermd.json(method, url, options)    -> the parsed body of api(...)
//   opentermd.upload(url, form, options)    -> {status, body} through XMLHttpRequest, for progress events
//   opentermd.detail(response)              -> the readable reason of a failed Response
//
// options: { json, body, headers, signal, timeout (ms; 0 = none), cache, keepalive }.
// Every request carries the session cookie and the page's CSRF token; none is sent anywhere else.
"use strict";

(() => {
  const DEFAULT_TIMEOUT = 60000;
  const MEANINGS = {
    401: "Your session has ended: log in again",
    403: "Not allowed here",
    404: "Not found",
    409: "Conflicts with something already there",
    413: "Too large for this server",
    429: "Too many requests: try again in a moment",
    507: "The disk is full",
  };

  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  /** The server's reason, from a JSON body {"detail": ...} (or the terminal API's {"error": ...}). */
  function reasonOf(payload) {
    const reason = payload?.detail ?? payload?.error;
    if (typeof reason === "string") return reason;
    if (Array.isArray(reason)) return reason.map((item) => item?.msg || JSON.stringify(item)).join("; ");
    return reason ? JSON.stringify(reason) : "";
  }

  function readable(status, statusText, reason) {
    if (reason) return reason;
    return MEANINGS[status] || `Failed (${status} ${statusText || ""})`.replace(" )", ")");
  }

  async function detail(response) {
    let reason = "";
    try {
      reason = reasonOf(await response.clone().json());
    } catch (_) { /* not JSON: the status says it */ }
    return readable(response.status, response.statusText, reason);
  }

  function failure(message, status, reason = "") {
    const error = new Error(message);
    error.status = status;
    error.detail = reason || message;
    return error;
  }

  /** A signal that fires on the caller's abort or after `timeout` ms, whichever is first. */
  function deadline(signal, timeout) {
    const controller = new AbortController();
    const timer = timeout ? setTimeout(() => controller.abort(new DOMException("timeout", "TimeoutError")), timeout) : 0;
    if (signal) {
      if (signal.aborted) controller.abort(signal.reason);
      else signal.addEventListener("abort", () => controller.abort(signal.reason), { once: true });
    }
    return { signal: controller.signal, done: () => clearTimeout(timer) };
  }

  async function request(method, url, options = {}) {
    const { json, body, headers = {}, signal, timeout = DEFAULT_TIMEOUT, cache, keepalive } = options;
    const init = { method, credentials: "same-origin", headers: { ...headers }, cache, keepalive };
    if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = csrf();
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    } else if (body !== undefined) {
      init.body = body;
    }
    // A keepalive request outlives the page: no timer to hold it back.
    const limit = keepalive ? { signal, done() {} } : deadline(signal, timeout);
    init.signal = limit.signal;
    try {
      return await fetch(url, init);
    } catch (error) {
      if (error?.name === "AbortError" && limit.signal?.reason?.name === "TimeoutError") {
        throw failure("The server did not answer in time", 0);
      }
      if (error?.name === "AbortError") throw error;  // the caller cancelled: callers check .name
      throw failure("The connection failed before the server answered (is the daemon running?)", 0);
    } finally {
      limit.done();
    }
  }

  async function api(method, url, options = {}) {
    const response = await request(method, url, options);
    if (!response.ok) {
      let reason = "";
      try { reason = reasonOf(await response.json()); } catch (_) { /* not JSON */ }
      throw failure(readable(response.status, response.statusText, reason), response.status, reason);
    }
    return response;
  }

  async function json(method, url, options = {}) {
    return (await api(method, url, options)).json();
  }

  /**
   * POST a FormData through XMLHttpRequest (fetch has no upload progress).
   * options: { onProgress(fraction), signal, timeout }. Resolves {status, body, message} for any
   * answer (message: readable reason when not 2xx); rejects on network failure, timeout or abort
   * (error.name "AbortError").
   */
  function upload(url, form, { onProgress, signal, timeout = 0 } = {}) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.timeout = timeout;
      xhr.upload.addEventListener("progress", (event) => {
        if (onProgress && event.lengthComputable && event.total) onProgress(event.loaded / event.total);
      });
      xhr.addEventListener("load", () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        const ok = xhr.status >= 200 && xhr.status < 300;
        resolve({ status: xhr.status, body, message: ok ? "" : readable(xhr.status, xhr.statusText, reasonOf(body)) });
      });
      xhr.addEventListener("error", () => reject(failure(
        "The connection failed before the server answered (is the daemon running, or was the file too large?)", 0)));
      xhr.addEventListener("timeout", () => reject(failure("The server did not answer in time", 0)));
      xhr.addEventListener("abort", () => reject(new DOMException("Cancelled", "AbortError")));
      if (signal) {
        if (signal.aborted) { xhr.abort(); return; }
        signal.addEventListener("abort", () => xhr.abort(), { once: true });
      }
      xhr.send(form);
    });
  }

  let toastTimer;
  function toast(message, kind = "info") {
    const box = document.getElementById("toast");
    if (!box) return;
    box.textContent = message;
    box.className = kind;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, kind === "error" ? 8000 : 3000);
  }

  const reload = () => window.location.reload();

  window.opentermd = Object.assign(window.opentermd || {}, { csrf, request, api, json, upload, detail, toast, reload });
})();
