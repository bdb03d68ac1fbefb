/* labsys potency: live scoring progress, layout quick-fill, and the field viewer toggle.
   Loaded as a file (the CSP forbids inline scripts). */
(function () {
  "use strict";

  function pollProgress(bar) {
    var url = bar.getAttribute("data-url");
    var text = document.getElementById("score-progress-text");
    function tick() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (response) { return response.json(); })
        .then(function (data) {
          bar.value = data.percent;
          bar.textContent = data.percent + " %";
          bar.setAttribute("data-state", data.state);
          if (text) {
            text.textContent = data.fields_done + " / " + data.fields_total +
              (data.fields_failed ? " (" + data.fields_failed + " ✗)" : "") + " · " + data.state;
          }
          if (data.finished) {
            bar.setAttribute("data-finished", "true");
            window.setTimeout(function () { window.location.reload(); }, 600);
          } else {
            window.setTimeout(tick, 1000);
          }
        })
        .catch(function () { window.setTimeout(tick, 3000); });
    }
    tick();
  }

  function quickFill() {
    var apply = document.getElementById("qf-apply");
    if (!apply) { return; }
    apply.addEventListener("click", function () {
      var target = document.getElementById("qf-target").value.split("-");
      var condition = document.getElementById("qf-condition").value;
      var lot = document.getElementById("qf-lot").value;
      var ratio = document.getElementById("qf-ratio").value;
      var selector = target[0] === "row" ? "td[data-row='" + target[1] + "']" : "td[data-col='" + target[1] + "']";
      document.querySelectorAll(selector).forEach(function (cell) {
        cell.querySelector(".well-condition").value = condition;
        if (condition === "test") { cell.querySelector(".well-lot").value = lot; }
        cell.querySelector(".well-ratio").value = (condition === "test" || condition === "reference") ? ratio : "";
      });
    });
  }

  function viewer() {
    var picture = document.getElementById("field-picture");
    document.querySelectorAll(".viewer-mode").forEach(function (button) {
      button.addEventListener("click", function () {
        picture.src = button.getAttribute("data-src");
        document.querySelectorAll(".viewer-mode").forEach(function (other) {
          other.setAttribute("aria-pressed", other === button ? "true" : "false");
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var bar = document.getElementById("score-progress");
    if (bar && bar.getAttribute("data-state") === "scoring") { pollProgress(bar); }
    quickFill();
    viewer();
  });
}());
