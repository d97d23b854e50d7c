// Starts Swagger UI on /docs. Kept out of the page so the page needs no inline script.
"use strict";
(function () {
  const target = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: target.dataset.specUrl,
    dom_id: "#swagger-ui",
    // No deep links: they put a focusable <a> inside each operation's <button> (nested controls
    // that screen readers and keyboards cannot operate apart).
    deepLinking: false,
    // The key stays in this page's memory only: never in localStorage, where any script on
    // this origin (or anyone at this browser later) could read it.
    persistAuthorization: false,
    displayOperationId: true,
  });
})();
