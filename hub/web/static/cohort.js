// The cohort builder shows each criterion's fields for its kind only. Without this script
// every field shows, and the hub ignores those that do not apply to the kind chosen.
(function () {
  "use strict";
  function show(criterion) {
    var kind = criterion.querySelector("[data-kind]").value;
    criterion.querySelectorAll("[data-for]").forEach(function (group) {
      var kinds = group.getAttribute("data-for").split(" ");
      group.hidden = kinds.indexOf(kind) < 0;
    });
  }
  document.querySelectorAll("[data-criterion]").forEach(function (criterion) {
    show(criterion);
    criterion.querySelector("[data-kind]").addEventListener("change", function () { show(criterion); });
  });
})();
