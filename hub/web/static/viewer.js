// The series viewer's slider: swaps the frame in place and keeps the links and the address
// in step. Without this script the links step through the frames one page at a time.
(function () {
  "use strict";
  var slider = document.getElementById("frame-slider");
  var image = document.getElementById("frame-image");
  var label = document.getElementById("frame-label");
  if (!slider || !image) { return; }
  var base = image.getAttribute("data-base");
  var version = image.getAttribute("data-version");
  var total = parseInt(slider.max, 10);
  function step(id, frame) {
    var link = document.getElementById(id);
    if (link) { link.href = "?frame=" + Math.min(Math.max(frame, 1), total); }
  }
  function go(frame) {
    frame = Math.min(Math.max(frame, 1), total);
    slider.value = frame;
    image.src = base + frame + ".png?v=" + version;
    image.alt = image.alt.replace(/frame \d+ of/, "frame " + frame + " of");
    label.textContent = "Frame " + frame + " of " + total;
    step("frame-prev", frame - 1);
    step("frame-next", frame + 1);
    history.replaceState(null, "", "?frame=" + frame);
  }
  slider.addEventListener("input", function () { go(parseInt(slider.value, 10)); });
  document.addEventListener("keydown", function (event) {
    if (event.target === slider) { return; }  // the slider steps by itself
    if (event.key === "ArrowRight" || event.key === "ArrowDown") { go(parseInt(slider.value, 10) + 1); }
    if (event.key === "ArrowLeft" || event.key === "ArrowUp") { go(parseInt(slider.value, 10) - 1); }
  });
})();
