// Starts Swagger UI on /docs. Kept out of the page so the page needs no inline script.
"use strict";
(function () {
  const target = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: target.dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    displayOperationId: true,
  });
})();
