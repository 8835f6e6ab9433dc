// Poll only while someone looks. The Content-Security-Policy forbids eval, so
// htmx cannot evaluate a trigger filter such as [document.visibilityState ===
// 'visible']; mark the polled element with data-poll-while-visible instead,
// and its requests are cancelled while the tab is hidden.
document.addEventListener("htmx:confirm", function (event) {
  if (
    document.visibilityState !== "visible" &&
    event.target.closest("[data-poll-while-visible]")
  ) {
    event.preventDefault();
  }
});
