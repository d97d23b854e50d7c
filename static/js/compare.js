// The compare page: the whitespace toggle compares again at once, and the path fields suggest files
// (names and paths from /files/matches, beside the original file) as you type.
(() => {
  "use strict";

  const form = document.querySelector("[data-testid=compare-form]");
  if (!form) return;
  const original = form.elements.namedItem("original");
  const suggestions = document.getElementById("compare-paths");
  const toggle = form.elements.namedItem("ignore_whitespace");

  toggle?.addEventListener("change", () => {
    if (original.value && form.elements.namedItem("revised").value) form.requestSubmit();
  });

  const folderOf = (path) => (path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : "");
  let timer;
  let pending;

  async function suggest(field) {
    const query = field.value.trim().split("/").pop();
    const folder = folderOf(original.value);
    if (!query || !folder) return;
    pending?.abort();
    pending = new AbortController();
    const url = `/files/matches?path=${encodeURIComponent(folder)}&query=${encodeURIComponent(query)}&limit=20`;
    const response = await window.opentermd.request("GET", url, { signal: pending.signal });
    if (!response.ok) return;
    const payload = await response.json();
    suggestions.replaceChildren(...payload.results.filter((result) => result.type !== "directory").map((result) => {
      const option = document.createElement("option");
      option.value = result.path;
      return option;
    }));
  }

  for (const field of [original, form.elements.namedItem("revised")]) {
    field.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => suggest(field).catch(() => {}), 200);
    });
  }
})();
