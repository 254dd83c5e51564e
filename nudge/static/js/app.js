/*
 * NudgeCampaign dashboard behaviour.
 *
 * Loaded on every page with `defer`, right after htmx.min.js:
 *   <script src="/static/js/htmx.min.js" defer></script>
 *   <script src="/static/js/app.js" defer></script>
 *
 * The CSP is `script-src 'self'`, so there are no inline scripts or inline
 * event handlers anywhere: behaviour is declared with data-* / hx-* attributes
 * and wired up here by event delegation on `document`, which also covers
 * content that htmx swaps in later.
 *
 *   data-confirm="Delete this list?"   confirm() before a click/submit goes ahead
 *   data-copy="#api-secret"            copy that element's text, label -> "Copied"
 *   data-dismiss                       remove the closest .flash / .toast
 *   data-shown-when="#map-2=new"       hidden unless that select has that value
 *                                      (shown to browsers without JavaScript)
 *   <time datetime="ISO">              gets title="3 minutes ago" unless it has one
 *   HX-Trigger: {"toast": {"message": "Saved", "level": "success"}}
 *                                      shows a toast in #toasts for 4 s
 *   .toast rendered by the server      dismissed after 6 s
 */
(function () {
  "use strict";

  var TOAST_MS = 4000; // toasts raised by an HX-Trigger "toast" event
  var SERVER_TOAST_MS = 6000; // .toast elements rendered in the page / swapped in
  var COPIED_MS = 2000; // how long a copy button says "Copied"

  /* ---------------------------------------------------------------------
   * htmx configuration
   * ------------------------------------------------------------------- */
  if (window.htmx) {
    // Our stylesheet styles .htmx-indicator itself; don't inject a <style>.
    htmx.config.includeIndicatorStyles = false;
    // No eval under our CSP: hx-on:*, hx-vals="js:..." and [filter] triggers
    // are unavailable. Saying so up front avoids CSP violation noise.
    htmx.config.allowEval = false;
    // The server answers invalid form input with the same fragment and
    // status 422: swap it in (htmx 2 does not swap 4xx by default).
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "422", swap: true, error: false },
      { code: "[45]..", swap: false, error: true }
    ];
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : null;
  }

  // Every htmx request carries the CSRF token (Flask-WTF reads X-CSRFToken).
  document.addEventListener("htmx:configRequest", function (evt) {
    var token = csrfToken();
    if (token && evt.detail && evt.detail.headers && !evt.detail.headers["X-CSRFToken"]) {
      evt.detail.headers["X-CSRFToken"] = token;
    }
  });

  /* ---------------------------------------------------------------------
   * data-confirm (for plain forms, links and buttons; htmx has hx-confirm)
   *
   * Listeners run in the capture phase on document, so a "Cancel" stops the
   * event before any other handler (including htmx's) sees it.
   * ------------------------------------------------------------------- */
  function confirmed(el) {
    var message = el.getAttribute("data-confirm");
    return !message || window.confirm(message);
  }

  document.addEventListener("click", function (evt) {
    var el = evt.target.closest && evt.target.closest("[data-confirm]");
    if (!el || el.tagName === "FORM") return;
    if (!confirmed(el)) {
      evt.preventDefault();
      evt.stopImmediatePropagation();
    } else if (el.form || el.closest("form")) {
      // Remember the answer so the form's own data-confirm doesn't ask again.
      el.setAttribute("data-confirmed", "");
    }
  }, true);

  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (!form || !form.hasAttribute || !form.hasAttribute("data-confirm")) return;
    var submitter = evt.submitter;
    if (submitter && submitter.hasAttribute("data-confirmed")) {
      submitter.removeAttribute("data-confirmed");
      return;
    }
    if (!confirmed(form)) {
      evt.preventDefault();
      evt.stopImmediatePropagation();
    }
  }, true);

  /* ---------------------------------------------------------------------
   * data-copy="#selector": copy that element's text to the clipboard
   * ------------------------------------------------------------------- */
  function copyWithSelection(text) {
    // Fallback for plain-http hosts and browsers that refuse the async API.
    var previous = document.activeElement;
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "sr-only";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    if (previous && previous.focus) previous.focus();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy failed"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return copyWithSelection(text);
      });
    }
    return copyWithSelection(text);
  }

  document.addEventListener("click", function (evt) {
    var button = evt.target.closest && evt.target.closest("[data-copy]");
    if (!button) return;
    evt.preventDefault();
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = ("value" in source && typeof source.value === "string")
      ? source.value
      : source.textContent;
    var label = button.getAttribute("data-copy-label");
    if (label === null) {
      label = button.textContent;
      button.setAttribute("data-copy-label", label);
    }
    copyText(text.trim()).then(function () {
      button.textContent = "Copied";
      button.classList.add("is-copied");
    }, function () {
      button.textContent = "Press Ctrl+C to copy";
      selectContents(source);
    }).then(function () {
      clearTimeout(button._copyTimer);
      button._copyTimer = setTimeout(function () {
        button.textContent = button.getAttribute("data-copy-label");
        button.classList.remove("is-copied");
      }, COPIED_MS);
    });
  });

  function selectContents(el) {
    if (typeof el.select === "function") { el.select(); return; }
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  /* ---------------------------------------------------------------------
   * Toasts and flash messages
   * ------------------------------------------------------------------- */
  function toastContainer() {
    var box = document.getElementById("toasts");
    if (!box) {
      box = document.createElement("div");
      box.id = "toasts";
      document.body.appendChild(box);
    }
    if (!box.hasAttribute("aria-live")) box.setAttribute("aria-live", "polite");
    return box;
  }

  function removeMessage(el) {
    if (!el || el.classList.contains("is-leaving")) return;
    clearTimeout(el._dismissTimer);
    var reduce = window.matchMedia &&
      window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    if (reduce) { el.remove(); return; }
    el.classList.add("is-leaving");
    setTimeout(function () { el.remove(); }, 200);
  }

  // Dismiss after `ms`, pausing while the pointer or focus is on the toast
  // so that nobody loses a message they are reading.
  function autoDismiss(el, ms) {
    if (el._dismissArmed) return;
    el._dismissArmed = true;
    var start = function () {
      clearTimeout(el._dismissTimer);
      el._dismissTimer = setTimeout(function () { removeMessage(el); }, ms);
    };
    var pause = function () { clearTimeout(el._dismissTimer); };
    el.addEventListener("mouseenter", pause);
    el.addEventListener("focusin", pause);
    el.addEventListener("mouseleave", start);
    el.addEventListener("focusout", start);
    start();
  }

  function showToast(message, level) {
    level = ["success", "error", "info"].indexOf(level) >= 0 ? level : "info";
    var toast = document.createElement("div");
    toast.className = "toast toast-" + level;
    toast.setAttribute("role", level === "error" ? "alert" : "status");
    var text = document.createElement("span");
    text.className = "toast-message";
    text.textContent = message;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("data-dismiss", "");
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    toast.appendChild(text);
    toast.appendChild(close);
    toastContainer().appendChild(toast);
    autoDismiss(toast, TOAST_MS);
    return toast;
  }

  // Server: HX-Trigger: {"toast": {"message": "Campaign saved", "level": "success"}}
  // (a plain string value arrives as detail.value and is shown as info).
  document.addEventListener("toast", function (evt) {
    var d = evt.detail || {};
    var message = d.message || d.value;
    if (message) showToast(String(message), d.level);
  });

  // htmx does not swap a 413 (a form field or body over the server's limits) or a 429: say so instead of
  // leaving the page silent. The page keeps what was typed.
  document.addEventListener("htmx:responseError", function (evt) {
    var xhr = evt.detail && evt.detail.xhr;
    if (xhr && xhr.status === 413) {
      showToast("Not saved: this is larger than the server accepts. Your changes are still on this page.", "error");
    } else if (xhr && xhr.status === 429) {
      // A rate limit (e.g. invitation emails): say when to try again rather than nothing.
      var wait = parseInt(xhr.getResponseHeader("Retry-After"), 10);
      showToast("Too many requests. " + (wait > 0 ? "Try again in " + (wait > 90 ? Math.ceil(wait / 60) + " minutes." : wait + " seconds.") : "Wait a moment and try again."), "error");
    }
  });

  document.addEventListener("click", function (evt) {
    var btn = evt.target.closest && evt.target.closest("[data-dismiss]");
    if (!btn) return;
    var box = btn.closest(".flash, .toast");
    if (box) {
      evt.preventDefault();
      removeMessage(box);
    }
  });

  /* ---------------------------------------------------------------------
   * Relative time: <time datetime="2024-05-01T10:00:00Z"> gets
   * title="3 minutes ago". Titles are refreshed on hover so they stay true;
   * titles written by the server are left alone.
   * ------------------------------------------------------------------- */
  var rtf = window.Intl && Intl.RelativeTimeFormat
    ? new Intl.RelativeTimeFormat(document.documentElement.lang || undefined, { numeric: "auto" })
    : null;
  var UNITS = [
    ["year", 31536000], ["month", 2592000], ["week", 604800],
    ["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]
  ];

  function relativeTime(date) {
    var seconds = (date.getTime() - Date.now()) / 1000;
    var abs = Math.abs(seconds);
    if (abs < 45) return "just now";
    for (var i = 0; i < UNITS.length; i++) {
      var unit = UNITS[i][0], size = UNITS[i][1];
      if (abs >= size || unit === "second") {
        var n = Math.round(seconds / size);
        if (rtf) return rtf.format(n, unit);
        var m = Math.abs(n), label = m + " " + unit + (m === 1 ? "" : "s");
        return n < 0 ? label + " ago" : "in " + label;
      }
    }
    return "";
  }

  function titleTime(el) {
    if (el.hasAttribute("title") && !el.hasAttribute("data-relative-title")) return;
    var date = new Date(el.getAttribute("datetime"));
    if (isNaN(date.getTime())) return;
    el.setAttribute("title", relativeTime(date));
    el.setAttribute("data-relative-title", "");
  }

  document.addEventListener("mouseover", function (evt) {
    var el = evt.target.closest && evt.target.closest("time[datetime]");
    if (el) titleTime(el);
  });

  /* ---------------------------------------------------------------------
   * <details class="user-menu">: close on a click elsewhere or on Escape
   * ------------------------------------------------------------------- */
  document.addEventListener("click", function (evt) {
    var menus = document.querySelectorAll("details.user-menu[open]");
    for (var i = 0; i < menus.length; i++) {
      if (!menus[i].contains(evt.target)) menus[i].removeAttribute("open");
    }
  });

  document.addEventListener("keydown", function (evt) {
    if (evt.key !== "Escape") return;
    var menu = evt.target.closest && evt.target.closest("details.user-menu[open]");
    if (menu) {
      menu.removeAttribute("open");
      var summary = menu.querySelector("summary");
      if (summary) summary.focus();
    }
  });

  /* ---------------------------------------------------------------------
   * data-shown-when="#control=value": the element is shown only while the
   * control has that value (e.g. the new-field inputs of an import column
   * mapped to "Create a custom field…"). The server renders it visible, so
   * the form stays whole without JavaScript.
   * ------------------------------------------------------------------- */
  function applyShownWhen(el) {
    var rule = el.getAttribute("data-shown-when");
    var cut = rule.lastIndexOf("=");
    var control = document.querySelector(rule.slice(0, cut));
    if (control) el.hidden = control.value !== rule.slice(cut + 1);
  }

  document.addEventListener("change", function (evt) {
    var id = evt.target && evt.target.id;
    if (!id) return;
    var dependents = document.querySelectorAll('[data-shown-when^="#' + id + '="]');
    for (var i = 0; i < dependents.length; i++) applyShownWhen(dependents[i]);
  });

  /* On narrow screens the nav is one horizontally scrolling row: bring the
   * current page's link into view. */
  function revealActiveNav() {
    var nav = document.querySelector(".sidebar nav.nav");
    var active = nav && nav.querySelector("a.active, a[aria-current='page']");
    if (!active || nav.scrollWidth <= nav.clientWidth) return;
    var navBox = nav.getBoundingClientRect();
    var linkBox = active.getBoundingClientRect();
    nav.scrollLeft += (linkBox.left - navBox.left) - (navBox.width - linkBox.width) / 2;
  }

  /* ---------------------------------------------------------------------
   * Run on the first page and on every fragment htmx swaps in.
   * ------------------------------------------------------------------- */
  function init(root) {
    if (!root || !root.querySelectorAll) return;
    var nodes = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < nodes.length; i++) titleTime(nodes[i]);
    if (root.matches && root.matches("time[datetime]")) titleTime(root);

    var toasts = root.querySelectorAll(".toast");
    for (var j = 0; j < toasts.length; j++) autoDismiss(toasts[j], SERVER_TOAST_MS);
    if (root.classList && root.classList.contains("toast")) autoDismiss(root, SERVER_TOAST_MS);

    var dependents = root.querySelectorAll("[data-shown-when]");
    for (var k = 0; k < dependents.length; k++) applyShownWhen(dependents[k]);
  }

  function start() {
    init(document);
    revealActiveNav();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
  document.addEventListener("htmx:load", function (evt) {
    init(evt.detail && evt.detail.elt ? evt.detail.elt : evt.target);
  });

  // Exposed for other small scripts (e.g. a page that wants to toast locally).
  window.Nudge = window.Nudge || {};
  window.Nudge.toast = showToast;
})();
