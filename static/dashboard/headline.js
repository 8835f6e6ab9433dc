// The tab's title follows the cluster's state while a page polls. Every polled
// fragment swaps the icon (#favicon) in out of band, with the title's first part
// in data-headline ("(35) Degraded"); the rest of the title (the page's name)
// stays as the server rendered it.
(function () {
  "use strict";
  const HEADLINE = /^\(\d+\) [A-Z][a-z]+ · /;

  function sync() {
    const icon = document.getElementById("favicon");
    const headline = icon && icon.getAttribute("data-headline");
    if (!headline) {
      return;
    }
    const title = headline + " · " + document.title.replace(HEADLINE, "");
    if (document.title !== title) {
      document.title = title;
    }
  }

  document.addEventListener("htmx:afterSettle", sync);
})();
