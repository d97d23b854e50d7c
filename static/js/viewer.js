// The image viewer on an image's file page: fits the window, zooms (buttons, wheel, pinch, + − 0),
// pans by dragging or scrolling, and steps through the folder's images with ← → (or the ‹ › buttons,
// or a sideways swipe on a phone).
// The server puts the folder's images, sorted as the browse page sorts them, in #viewer-images, so a
// step costs only the next image's bytes (its neighbours are fetched ahead), never a listing.
(() => {
  "use strict";

  const viewer = document.getElementById("viewer");
  if (!viewer) return;
  const section = document.getElementById("file");
  const stage = viewer.querySelector(".viewer-stage");
  const img = stage.querySelector("img");
  const level = viewer.querySelector(".viewer-zoom");
  const count = viewer.querySelector(".viewer-count");
  const images = JSON.parse(document.getElementById("viewer-images").textContent || "[]");
  const MIN = 0.05;
  const MAX = 16;
  const STEP = 1.25;

  let index = Math.max(0, images.findIndex((image) => image.src === img.getAttribute("src")));
  let scale = null; // null: fit the stage; else natural pixels times this

  // --- zoom ------------------------------------------------------------------------------------------

  function fitScale() {
    if (!img.naturalWidth) return 1;
    return Math.min(1, stage.clientWidth / img.naturalWidth, stage.clientHeight / img.naturalHeight);
  }

  function show() {
    viewer.dataset.zoom = scale === null ? "fit" : "zoomed";
    if (scale === null) {
      img.style.removeProperty("width");
      level.textContent = `Fit (${Math.round(fitScale() * 100)}%)`;
    } else {
      img.style.width = `${Math.round(img.naturalWidth * scale)}px`;
      level.textContent = `${Math.round(scale * 100)}%`;
    }
  }

  /** Zoom to `next` keeping the image point under (x, y) of the stage where it was. */
  function zoomTo(next, x = stage.clientWidth / 2, y = stage.clientHeight / 2) {
    const before = scale ?? fitScale();
    const target = Math.min(MAX, Math.max(MIN, next));
    const pointX = (stage.scrollLeft + x) / before;
    const pointY = (stage.scrollTop + y) / before;
    scale = target;
    show();
    stage.scrollLeft = pointX * target - x;
    stage.scrollTop = pointY * target - y;
  }

  const zoomBy = (factor, x, y) => zoomTo((scale ?? fitScale()) * factor, x, y);
  const fit = () => { scale = null; show(); };

  stage.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = stage.getBoundingClientRect();
    // A trackpad pinch arrives as wheel with ctrlKey and small deltas: follow it smoothly.
    const factor = Math.exp(-event.deltaY * (event.ctrlKey ? 0.01 : 0.002));
    zoomBy(factor, event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });

  // --- pan and pinch (pointer events: mouse, pen and touch alike) ------------------------------------

  const pointers = new Map();
  let pinch = null;
  let swipe = null; // a one-finger stroke on a fitted image: left/right steps through the folder
  const SWIPE = 60; // CSS pixels

  stage.addEventListener("pointerdown", (event) => {
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    stage.setPointerCapture(event.pointerId);
    swipe = pointers.size === 1 && scale === null && event.pointerType !== "mouse"
      ? { x: event.clientX, y: event.clientY } : null;
    if (pointers.size === 2) pinch = { distance: spread(), scale: scale ?? fitScale() };
  });

  stage.addEventListener("pointermove", (event) => {
    const last = pointers.get(event.pointerId);
    if (!last) return;
    const now = { x: event.clientX, y: event.clientY };
    pointers.set(event.pointerId, now);
    if (pointers.size === 2) swipe = null;
    if (pinch && pointers.size === 2) {
      const box = stage.getBoundingClientRect();
      const [a, b] = [...pointers.values()];
      zoomTo(pinch.scale * (spread() / pinch.distance), (a.x + b.x) / 2 - box.left, (a.y + b.y) / 2 - box.top);
    } else if (pointers.size === 1 && scale !== null) {
      stage.scrollLeft -= now.x - last.x;
      stage.scrollTop -= now.y - last.y;
    }
  });

  const release = (event) => {
    pointers.delete(event.pointerId);
    if (pointers.size < 2) pinch = null;
    if (swipe && event.type === "pointerup" && pointers.size === 0) {
      const dx = event.clientX - swipe.x;
      if (Math.abs(dx) > SWIPE && Math.abs(dx) > 2 * Math.abs(event.clientY - swipe.y)) go(dx < 0 ? 1 : -1);
    }
    swipe = null;
  };
  stage.addEventListener("pointerup", release);
  stage.addEventListener("pointercancel", release);
  stage.addEventListener("dblclick", (event) => {
    const box = stage.getBoundingClientRect();
    if (scale === null) zoomTo(1, event.clientX - box.left, event.clientY - box.top);
    else fit();
  });

  function spread() {
    const [a, b] = [...pointers.values()];
    return Math.hypot(a.x - b.x, a.y - b.y) || 1;
  }

  // --- previous / next -------------------------------------------------------------------------------

  function go(step) {
    if (images.length < 2) return;
    index = (index + step + images.length) % images.length;
    const image = images[index];
    img.src = image.src;
    img.alt = image.name;
    stage.setAttribute("aria-label", image.name);
    scale = null;
    document.title = `${image.name} · opentermd`;
    section.dataset.path = image.path;
    for (const link of section.querySelectorAll("[data-testid=download], [data-testid=raw]")) {
      link.href = image.src;
      if (link.hasAttribute("download")) link.setAttribute("download", image.name);
    }
    const compare = section.querySelector("[data-testid=compare]");
    if (compare) compare.href = "/compare?original=" + encodeURIComponent(image.path);
    const size = section.querySelector("[data-testid=size]");
    if (size) { size.textContent = image.size; size.title = image.bytes; }
    const type = section.querySelector("[data-testid=type-name]");
    if (type) type.textContent = image.type;
    const crumb = document.querySelector("[data-testid=breadcrumbs] a:last-of-type");
    if (crumb) { crumb.textContent = image.name; crumb.href = image.href; }
    history.replaceState(null, "", image.href);
    counter();
    prefetch();
  }

  function counter() {
    count.textContent = images.length > 1 ? `${index + 1} / ${images.length}` : "";
    for (const button of viewer.querySelectorAll("[data-viewer=prev], [data-viewer=next]")) {
      button.hidden = images.length < 2;
    }
  }

  function prefetch() {
    for (const step of [1, -1]) {
      const neighbour = images[(index + step + images.length) % images.length];
      if (neighbour) new Image().src = neighbour.src;
    }
  }

  // --- wiring ----------------------------------------------------------------------------------------

  const actions = { prev: () => go(-1), next: () => go(1), in: () => zoomBy(STEP), out: () => zoomBy(1 / STEP), fit };
  viewer.addEventListener("click", (event) => {
    const button = event.target.closest("[data-viewer]");
    if (button) actions[button.dataset.viewer]();
  });

  const KEYS = { ArrowLeft: actions.prev, ArrowRight: actions.next, "+": actions.in, "=": actions.in,
    "-": actions.out, "−": actions.out, "_": actions.out, "0": fit };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest?.("input, textarea, select, [contenteditable], .editor")) return;
    const action = KEYS[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  });

  img.addEventListener("load", show);
  window.addEventListener("resize", () => { if (scale === null) show(); });
  counter();
  show();
  prefetch();
})();
