// The send flow: preselect the browser's own time zone while the form still shows the default (UTC).
(function () {
  "use strict";
  function preselect() {
    var select = document.getElementById("zone");
    if (!select || select.dataset.default !== "yes") return;
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].value === zone) { select.selectedIndex = i; return; }
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", preselect);
  else preselect();
})();
