// Small progressive touches; every page works without them.
(function () {
  "use strict";

  // A fault form shows only the parameters its kind uses (the server ignores the others anyway).
  function syncFaultForm(form) {
    var select = form.querySelector("select[name=kind]");
    if (!select) return;
    var kind = select.value;
    form.querySelectorAll("[data-kinds]").forEach(function (part) {
      var show = part.getAttribute("data-kinds").split(" ").indexOf(kind) !== -1;
      part.hidden = !show;
      part.querySelectorAll("input, select").forEach(function (input) { input.disabled = !show; });
    });
  }

  // A resilience switch that is off greys out its settings: the fieldset is disabled (the server
  // renders it so from the state; this follows the checkbox in its legend, which stays usable).
  function bindSwitch(fieldset) {
    var box = fieldset.querySelector("legend input[type=checkbox]");
    if (!box || box.dataset.bound) return;
    box.dataset.bound = "1";
    box.addEventListener("change", function () { fieldset.disabled = !box.checked; });
  }

  function init(root) {
    root.querySelectorAll("fieldset[data-switch]").forEach(bindSwitch);
    root.querySelectorAll("form.fault-form").forEach(function (form) {
      syncFaultForm(form);
      var select = form.querySelector("select[name=kind]");
      if (select && !select.dataset.bound) {
        select.dataset.bound = "1";
        select.addEventListener("change", function () { syncFaultForm(form); });
      }
    });
    // Buttons that start slow work say so, and cannot be pressed twice.
    root.querySelectorAll("form[data-busy]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", function () {
        var button = form.querySelector("button[type=submit], button:not([type])");
        if (button) {
          button.disabled = true;
          button.textContent = form.getAttribute("data-busy");
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (event) { init(event.target); });

  // htmx drops a 4xx answer; where a partial answers a refusal as HTML to show (the Audit's 429
  // "too many audits from your address"), the target says so with data-swap-refusals.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    var type = xhr.getResponseHeader("Content-Type") || "";
    if (xhr.status === 429 && type.indexOf("text/html") === 0 && event.detail.target.closest("[data-swap-refusals]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
})();

// The Labs page (console/lab.html). No inline script anywhere: the Content-Security-Policy allows
// scripts from the dashboard's static files only.
(function () {
  // A wrong-looking answer comes back as a 400 with the engine's message: show it in place, as htmx would a 200.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.xhr.status === 400 && event.detail.target.closest(".lab-text")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  // Copy a step's terminal line; without a clipboard the line stays selectable by hand.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button || !navigator.clipboard) return;
    navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    });
  });
})();
