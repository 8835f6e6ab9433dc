// The dead-letter console's small behaviours. No inline scripts anywhere: this
// file is loaded once and listens on the document, so htmx swaps keep working.
(function () {
  "use strict";
  let lastPicked = null;

  function picks() {
    return Array.from(document.querySelectorAll("input.pick"));
  }

  function updatePicked() {
    const n = picks().filter((box) => box.checked).length;
    document.querySelectorAll("[data-picked]").forEach((el) => { el.textContent = String(n); });
  }

  document.addEventListener("click", function (event) {
    const box = event.target.closest("input.pick");
    if (box) {
      // Shift-click ticks (or unticks) every row between this one and the last.
      if (event.shiftKey && lastPicked && lastPicked !== box) {
        const all = picks();
        const [a, b] = [all.indexOf(lastPicked), all.indexOf(box)].sort((x, y) => x - y);
        all.slice(a, b + 1).forEach((other) => { other.checked = box.checked; });
      }
      lastPicked = box;
      updatePicked();
      return;
    }
    const page = event.target.closest("input.pick-page");
    if (page) {
      picks().forEach((other) => { other.checked = page.checked; });
      updatePicked();
      return;
    }
    const copy = event.target.closest("[data-copy]");
    if (copy) {
      const source = document.querySelector(copy.getAttribute("data-copy"));
      if (source && navigator.clipboard) {
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          copy.textContent = "Copied";
          setTimeout(function () { copy.textContent = "Copy"; }, 1500);
        });
      }
    }
  });

  document.addEventListener("htmx:afterSwap", updatePicked);
})();
