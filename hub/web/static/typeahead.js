// Concept names as you type, for every input marked data-concepts (and the catalogue's
// #concept): asks the hub (same origin, session cookie) and fills the input's datalist.
(function () {
  "use strict";
  var timer = null;
  function wanted(input) {
    return input && input.tagName === "INPUT" &&
      (input.hasAttribute("data-concepts") || input.id === "concept");
  }
  document.addEventListener("input", function (event) {
    var input = event.target;
    if (!wanted(input)) { return; }
    var options = document.getElementById(input.getAttribute("list") || "");
    if (!options) { return; }
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
