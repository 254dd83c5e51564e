/*
 * Contacts list: bulk selection.
 *
 *   <input type="checkbox" data-select-all>       checks/unchecks every name="ids" box of its form
 *   <input type="checkbox" data-select-matching>  "all N matching this filter" (acts on the filter, not the ids)
 *   <div data-bulk-bar> ... <span data-selected-count>   hidden until something is selected
 *
 * Event delegation on document, so it keeps working after htmx swaps the results in.
 */
(function () {
  "use strict";

  function update(form) {
    if (!form) return;
    var boxes = form.querySelectorAll('input[name="ids"]');
    var checked = form.querySelectorAll('input[name="ids"]:checked').length;
    var matching = form.querySelector("[data-select-matching]");
    var all = form.querySelector("[data-select-all]");
    var bar = form.querySelector("[data-bulk-bar]");
    var count = form.querySelector("[data-selected-count]");
    if (all) {
      all.checked = boxes.length > 0 && checked === boxes.length;
      all.indeterminate = checked > 0 && checked < boxes.length;
    }
    if (count) {
      count.textContent = matching && matching.checked
        ? (matching.parentNode.textContent || "").replace(/\s+/g, " ").trim().replace(/ matching this filter$/, "")
        : String(checked);
    }
    if (bar) bar.hidden = checked === 0 && !(matching && matching.checked);
  }

  document.addEventListener("change", function (evt) {
    var el = evt.target;
    if (!el || !el.form) return;
    if (el.hasAttribute("data-select-all")) {
      var boxes = el.form.querySelectorAll('input[name="ids"]');
      for (var i = 0; i < boxes.length; i++) boxes[i].checked = el.checked;
      var matching = el.form.querySelector("[data-select-matching]");
      if (matching && !el.checked) matching.checked = false;
    }
    if (el.hasAttribute("data-select-all") || el.name === "ids" || el.hasAttribute("data-select-matching")) {
      update(el.form);
    }
  });

  function init(root) {
    if (!root || !root.querySelectorAll) return;
    var forms = root.querySelectorAll("form#bulk-form");
    for (var i = 0; i < forms.length; i++) update(forms[i]);
    if (root.id === "bulk-form") update(root);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  } else {
    init(document);
  }
  document.addEventListener("htmx:load", function (evt) {
    init(evt.detail && evt.detail.elt ? evt.detail.elt : document);
  });
})();
