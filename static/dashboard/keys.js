// The dead-letter console with the keyboard alone: "/" searches, "j" and "k"
// move through the rows, "x" ticks the current one, Enter opens it, "?" lists
// the keys (Escape closes the list). Keys typed into a field are the field's.
// Only pages that carry the list of keys (#keys-help) listen, except for "t",
// which focuses the header's task-id box on every page.
(function () {
  "use strict";
  const ROWS = "#deadletters tbody tr";

  function typing(target) {
    if (!(target instanceof Element)) {
      return false;
    }
    if (target.closest("textarea, select, [contenteditable]")) {
      return true;
    }
    const input = target.closest("input");
    return Boolean(input) && !["checkbox", "radio", "button", "submit", "reset"].includes(input.type);
  }

  function rows() {
    return Array.from(document.querySelectorAll(ROWS));
  }

  function move(step) {
    const all = rows();
    if (!all.length) {
      return;
    }
    const now = all.findIndex((row) => row.classList.contains("current"));
    const next = now === -1 ? 0 : Math.min(Math.max(now + step, 0), all.length - 1);
    all.forEach((row) => {
      row.classList.remove("current");
      row.removeAttribute("aria-current");
    });
    const row = all[next];
    row.classList.add("current");
    row.setAttribute("aria-current", "true");
    // Focus the row's link: the focus ring shows where one is, Enter opens it.
    const target = row.querySelector("a[href]") || row;
    if (target === row) {
      row.tabIndex = -1;
    }
    target.focus();
    row.scrollIntoView({ block: "nearest" });
  }

  function tick() {
    const row = document.querySelector(ROWS + ".current");
    const box = row && row.querySelector("input.pick");
    if (box) {
      box.click(); // as a click does: the count of ticked rows follows (console.js)
    }
  }

  function help() {
    const dialog = document.getElementById("keys-help");
    if (dialog && !dialog.open) {
      dialog.showModal();
    }
  }

  // On every page: "t" focuses the header's task-id box ("where is task X?").
  document.addEventListener("keydown", function (event) {
    if (event.key !== "t" || event.ctrlKey || event.metaKey || event.altKey || event.isComposing
        || typing(event.target) || document.querySelector("dialog[open]")) {
      return;
    }
    const box = document.getElementById("task-search-q");
    if (box) {
      event.preventDefault();
      box.focus();
      box.select();
    }
  });

  document.addEventListener("keydown", function (event) {
    if (!document.getElementById("keys-help")) {
      return;
    }
    if (event.key === "Escape" && event.target instanceof Element && event.target.matches("input[type=search]")) {
      event.target.blur(); // out of the search, back to the rows
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing || typing(event.target)) {
      return;
    }
    if (document.querySelector("dialog[open]")) {
      return; // Escape closes it (the browser's own)
    }
    const act = {
      "/": () => {
        const search = document.querySelector("form.filters input[name=q]");
        if (search) {
          search.focus();
          search.select();
        }
      },
      j: () => move(1),
      k: () => move(-1),
      x: tick,
      "?": help,
    }[event.key];
    if (act) {
      event.preventDefault();
      act();
    }
  });

  document.addEventListener("click", function (event) {
    if (!(event.target instanceof Element)) {
      return;
    }
    if (event.target.closest("[data-keys-open]")) {
      help();
    } else if (event.target.closest("[data-keys-close]")) {
      const dialog = event.target.closest("dialog");
      if (dialog) {
        dialog.close();
      }
    }
  });

  // The button that opens the list is hidden until this script runs.
  document.querySelectorAll("[data-keys-open]").forEach((button) => {
    button.hidden = false;
  });
})();
