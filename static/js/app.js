/* Every page: after a refused form, the cursor goes to the first field with an error instead of
   the page's usual first field, so a keyboard user corrects it without hunting for it. The
   browser applies `autofocus` after scripts run, so the attribute is taken away first. */
(function () {
  "use strict";
  var invalid = document.querySelector('main [aria-invalid="true"]');
  if (!invalid) { return; }
  document.querySelectorAll("[autofocus]").forEach(function (node) { node.removeAttribute("autofocus"); });
  invalid.focus();
  window.addEventListener("load", function () {
    if (document.activeElement === document.body) { invalid.focus(); }
  });
}());
