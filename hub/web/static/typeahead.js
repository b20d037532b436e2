// Concept names as you type: asks the hub (same origin, session cookie); no library.
(function () {
  "use strict";
  var input = document.getElementById("concept");
  var options = document.getElementById("concept-options");
  if (!input || !options) { return; }
  var timer = null;
  input.addEventListener("input", function () {
    clearTimeout(timer);
    var text = input.value.trim();
    if (text.length < 2 || text.indexOf(":") > 0) { return; }
    timer = setTimeout(function () {
      fetch("/ui/concepts?q=" + encodeURIComponent(text), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(function (hits) {
          options.textContent = "";
          hits.forEach(function (hit) {
            var option = document.createElement("option");
            option.value = hit.system + ":" + hit.code;
            option.label = hit.display;
            options.appendChild(option);
          });
        });
    }, 150);
  });
})();
