/* Template pages: the desktop/mobile switch of email previews.
 *   <div data-preview> … <button data-preview-width="desktop|mobile"> … <iframe class="preview-iframe">
 */
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-preview-width]");
    if (!button) return;
    var frame = button.closest("[data-preview]");
    if (!frame) return;
    frame.classList.toggle("is-mobile", button.dataset.previewWidth === "mobile");
    frame.querySelectorAll("[data-preview-width]").forEach(function (other) {
      other.setAttribute("aria-pressed", String(other === button));
    });
  });
})();
