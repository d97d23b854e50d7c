// The browse page's grid view: a toggle (button or `g`) that puts data-view="grid" on the listing,
// where previews.css lays the rows out as tiles and shows each image row's thumbnail (loading=lazy:
// only the tiles on screen are fetched). The choice is remembered in this browser.
(() => {
  "use strict";

  const listing = document.querySelector("table.listing");
  const toggle = document.querySelector("[data-grid-toggle]");
  if (!listing || !toggle) return;
  const KEY = "opentermd.view";

  function show(view) {
    if (view === "grid") listing.dataset.view = "grid";
    else delete listing.dataset.view;
    toggle.setAttribute("aria-pressed", String(view === "grid"));  // the pressed "Grid" button says it is on
    toggle.title = view === "grid" ? "Show as a list (g)" : "Show as a grid with thumbnails (g)";
  }

  function flip() {
    const next = listing.dataset.view === "grid" ? "list" : "grid";
    try { localStorage.setItem(KEY, next); } catch { /* private mode: this page only */ }
    show(next);
  }

  let saved = "list";
  try { saved = localStorage.getItem(KEY) || "list"; } catch { /* storage refused */ }
  show(saved);
  toggle.addEventListener("click", flip);
  document.addEventListener("keydown", (event) => {
    if (event.key !== "g" || event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    if (event.target.closest?.("input, textarea, select, [contenteditable], dialog")) return;
    event.preventDefault();
    flip();
  });
})();
