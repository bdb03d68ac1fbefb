// Batches: progressive enhancement only; every rule is enforced on the server.
(function () {
  "use strict";

  function fieldOf(input) {
    return input ? input.closest(".field") : null;
  }

  // Show a dependent field only when it applies (the server still validates it either way).
  function toggle(controller, dependent, shouldShow) {
    var field = fieldOf(dependent);
    if (!controller || !field) { return; }
    function update() { field.classList.toggle("is-hidden", !shouldShow(controller)); }
    controller.addEventListener("change", update);
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    // Process step: the tissue method is asked only for tissue processing.
    toggle(document.getElementById("step_type"), document.getElementById("method"),
      function (el) { return el.value === "tissue_processing"; });
    // Cord receipt: the deviation description is asked only when accepting under a deviation.
    toggle(document.getElementById("accept_under_deviation"), document.getElementById("deviation_description"),
      function (el) { return el.checked; });
    // Passage: confirm before recording a count that looks like a typo (harvest below seeding).
    var seeded = document.getElementById("seeded_viable_cells");
    var harvested = document.getElementById("harvested_viable_cells");
    var form = harvested ? harvested.form : null;
    if (form && seeded && form.dataset.confirmDecline) {
      form.addEventListener("submit", function (event) {
        var s = parseInt(seeded.value, 10), h = parseInt(harvested.value, 10);
        if (s > 0 && h > 0 && h < s && !window.confirm(form.dataset.confirmDecline)) { event.preventDefault(); }
      });
    }
  });
})();
