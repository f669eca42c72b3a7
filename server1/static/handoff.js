// Submits the handoff form as soon as the page is shown, so the token travels in a POST body and
// never in a URL. Without JavaScript the visible button does the same.
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("handoff-form");
  if (form) { form.submit(); }
});
