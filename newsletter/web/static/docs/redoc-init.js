// Starts Redoc on /redoc; a file, not an inline script, so the page's CSP can forbid inline scripts.
"use strict";
(function () {
  var root = document.getElementById("redoc");
  Redoc.init(root.dataset.openapi, { hideDownloadButton: false }, root);
})();
