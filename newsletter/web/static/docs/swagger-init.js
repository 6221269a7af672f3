// Starts Swagger UI on /docs; a file, not an inline script, so the page's CSP can forbid inline scripts.
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  // validatorUrl: null, or Swagger UI would ask validator.swagger.io for a badge: no other host, ever.
  window.ui = SwaggerUIBundle({ url: root.dataset.openapi, dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null });
})();
