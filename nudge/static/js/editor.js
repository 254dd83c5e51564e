/*
 * The template editor (templates/editor/edit.html; server side in blueprints/editor.py).
 *
 * Every request leaves from #editor-state (the document as JSON, the version it started from, the
 * selected block) through htmx.ajax. That form has hx-sync="this:queue all", so requests run one at a
 * time, in order, and each reads the document when it is sent: an edit always starts from the answer
 * to the previous one, and nothing typed or dragged in between is lost.
 *
 *   edits     block tools (data-op), palette "Add" buttons (data-add), SortableJS drops and panel
 *             inputs (data-key, sent 400 ms after typing stops) post one operation to the ops URL;
 *             the answer is the canvas (swapped into #editor-stage) plus, out of band, the new
 *             document, the selection and, when the selection changed, the settings panel.
 *   autosave  an answer that changed the document carries HX-Trigger "editor-changed"; 1.5 s after
 *             the last one the document is posted to the save URL. The status says "Unsaved
 *             changes…", "Saving…", "Saved · version N" or why saving failed; a failed save keeps
 *             the document on the page and the next edit (or "Try again") saves again.
 *             #editor[data-save-state] says the same for scripts and tests (saved, dirty, saving,
 *             conflict, error).
 *   styles    the canvas carries colours and sizes in data-css='{"property": "value"}', set here
 *             with style.setProperty (the CSP forbids style="" in markup, not CSSOM).
 */
(function () {
  "use strict";

  var FIELD_DELAY = 400; // ms after the last keystroke in the panel before the change is sent
  var SAVE_DELAY = 1500; // ms after the last change before autosave

  var editor = document.getElementById("editor");
  if (!editor || !window.htmx) return;

  var state = document.getElementById("editor-state");
  var stage = document.getElementById("editor-stage");
  var palette = document.getElementById("palette");
  var urls = editor.dataset;
  var blocksMode = editor.dataset.mode === "blocks";

  // A swapped element must not get the old element's style attribute back (htmx "settles" it), or
  // the colours set from data-css would be wiped.
  htmx.config.attributesToSettle = ["class", "width", "height"];

  var changes = 0; // document changes applied so far
  var savedChanges = 0; // changes included in the last successful save
  var sendingChanges = 0; // changes included in the save being sent
  var saveTimer = null;
  var fieldTimer = null;
  var pendingForm = null;
  var pendingKeys = {};
  var codeDirty = false;
  var leaving = false;
  var focusAfter = null; // what to focus once the canvas is drawn again
  var focusPanel = false; // move focus into the panel once it is drawn (keyboard selection)
  var lastField = null; // the last text field edited, where a merge tag goes
  var sortables = [];
  var savedStatus = null; // {kind, text} of the last save, shown again when a change turns out to be none

  /* ---------------------------------------------------------------------
   * Requests
   * ------------------------------------------------------------------- */
  function send(url, values, target, swap) {
    var request = htmx.ajax("POST", url, {
      source: state, values: values || {}, target: target, swap: swap || "innerHTML"
    });
    if (request && request.catch) request.catch(function () {});
  }

  function runOp(values) {
    flushFields();
    hideMessage();
    send(urls.opsUrl, values, "#editor-stage");
  }

  function isDirty() {
    return changes !== savedChanges || fieldTimer !== null || codeDirty;
  }

  // What went wrong with a request, in plain words: an edit that failed was not made; a save that
  // failed leaves the changes on this page, to be saved with the next edit or "Try again".
  function problem(status, saving) {
    if (status === 403) return "Your role does not allow editing this template (or it is a gallery template).";
    if (status === 404) return "This template no longer exists.";
    var cause = status ? "the server had a problem (" + status + ")" : "the server can't be reached";
    return saving ? "Not saved: " + cause + ". Your changes are still on this page and are saved with your next edit."
      : "That change was not made: " + cause + ". Try it again in a moment; everything else is kept.";
  }

  document.addEventListener("htmx:configRequest", function (evt) {
    if (evt.detail.elt === state && evt.detail.path === urls.saveUrl) sendingChanges = changes;
  });

  // Restoring a version and switching to code save the page's work first, then reload the editor.
  // (Any other redirect, such as to the sign-in page, still warns about unsaved changes.)
  document.addEventListener("htmx:beforeOnLoad", function (evt) {
    var xhr = evt.detail.xhr;
    var path = evt.detail.requestConfig && evt.detail.requestConfig.path;
    if (xhr && xhr.getResponseHeader("HX-Redirect") && (path === urls.restoreUrl || path === urls.codeUrl)) {
      leaving = true;
    }
  });

  document.addEventListener("htmx:afterRequest", function (evt) {
    var detail = evt.detail;
    if (detail.elt !== state) return;
    var path = detail.requestConfig && detail.requestConfig.path;
    var status = detail.xhr ? detail.xhr.status : 0;
    if (path === urls.saveUrl) {
      afterSave(status);
    } else if (path === urls.codeUrl) {
      afterCodeSave(status);
    } else {
      if (status !== 422 && !(status >= 200 && status < 300)) showMessage(problem(status));
      markInvalid();
      // an answer that changed the document has already marked it unsaved ("editor-changed")
      settleStatus();
    }
  });

  /* ---------------------------------------------------------------------
   * Save state and autosave
   * ------------------------------------------------------------------- */
  function statusEl() {
    return document.getElementById("editor-status");
  }

  function showStatus(kind, text) {
    editor.setAttribute("data-save-state", kind);
    var el = statusEl();
    if (!el) return;
    el.className = "editor-status status-" + kind;
    el.setAttribute("data-state", kind);
    var label = el.querySelector(".status-text");
    if (label) {
      label.textContent = text;
      label.title = kind === "error" ? text : "";
    }
    var retry = el.querySelector("[data-save-now]");
    if (kind === "error" && !retry && blocksMode) {
      retry = document.createElement("button");
      retry.type = "button";
      retry.className = "btn btn-sm";
      retry.setAttribute("data-save-now", "");
      retry.textContent = "Try again";
      el.appendChild(retry);
    } else if (kind !== "error" && retry) {
      retry.remove();
    }
  }

  document.addEventListener("editor-changed", function () {
    changes += 1;
    showStatus("dirty", "Unsaved changes…");
    scheduleSave();
  });

  function scheduleSave() {
    clearTimeout(saveTimer);
    saveTimer = setTimeout(function () { saveNow(false); }, SAVE_DELAY);
  }

  function saveNow(force) {
    clearTimeout(saveTimer);
    saveTimer = null;
    if (!blocksMode) return;
    flushFields();
    if (!force && changes === savedChanges && fieldTimer === null) return;
    showStatus("saving", "Saving…");
    send(urls.saveUrl, {}, "#editor-status-slot");
  }

  function rememberSaved() {
    var el = statusEl();
    var label = el && el.querySelector(".status-text");
    if (label) savedStatus = { kind: el.getAttribute("data-state"), text: label.textContent };
  }

  // After an edit was refused (or changed nothing) the page may be as saved as before.
  function settleStatus() {
    if (!isDirty() && savedStatus && editor.getAttribute("data-save-state") === "dirty") {
      showStatus(savedStatus.kind, savedStatus.text);
    }
  }

  function afterSave(status) {
    var el = statusEl();
    var kind = el && el.getAttribute("data-state");
    if (status >= 200 && status < 300 && (kind === "saved" || kind === "conflict")) {
      rememberSaved();
      savedChanges = sendingChanges;
      editor.setAttribute("data-save-state", kind);
      refreshPreview(el.getAttribute("data-preview-url"));
      if (isDirty()) {
        if (kind === "saved") showStatus("dirty", "Unsaved changes…");
        editor.setAttribute("data-save-state", "dirty");
        if (changes !== savedChanges) scheduleSave();
      }
    } else if (status === 422) {
      editor.setAttribute("data-save-state", "error");
    } else {
      showStatus("error", problem(status, true));
    }
  }

  function afterCodeSave(status) {
    var el = statusEl();
    var kind = el && el.getAttribute("data-state");
    if (status >= 200 && status < 300 && (kind === "saved" || kind === "conflict")) {
      rememberSaved();
      codeDirty = false;
      editor.setAttribute("data-save-state", kind);
      refreshPreview(el.getAttribute("data-preview-url"));
    } else if (status !== 422 && status !== 204) {
      showStatus("error", problem(status, true));
    }
  }

  window.addEventListener("beforeunload", function (evt) {
    if (leaving || !isDirty()) return;
    evt.preventDefault();
    evt.returnValue = "";
  });

  // Leaving the tab (or the phone's screen turning off) saves at once.
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden" && blocksMode && isDirty()) saveNow(false);
  });

  // A page closed with changes not yet saved (the warning was answered "Leave") still sends them: a
  // beacon outlives the page. The CSRF token travels as a form field, since a beacon has no headers.
  window.addEventListener("pagehide", function () {
    if (leaving || !blocksMode || changes === savedChanges || !navigator.sendBeacon) return;
    var body = new FormData(state);
    body.append("csrf_token", csrfToken());
    navigator.sendBeacon(urls.saveUrl, body);
  });

  /* ---------------------------------------------------------------------
   * Messages
   * ------------------------------------------------------------------- */
  function showMessage(text) {
    var box = document.getElementById("editor-message");
    if (!box) return;
    box.textContent = "";
    var span = document.createElement("span");
    span.className = "editor-message-text";
    span.textContent = text;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "btn-link editor-message-close";
    close.setAttribute("data-dismiss-message", "");
    close.setAttribute("aria-label", "Dismiss this message");
    close.textContent = "\u00d7";
    box.appendChild(span);
    box.appendChild(close);
    box.hidden = false;
  }

  function hideMessage() {
    var box = document.getElementById("editor-message");
    if (box && !box.hidden) {
      box.hidden = true;
      box.textContent = "";
    }
  }

  /* ---------------------------------------------------------------------
   * The canvas: styles from data-css, selection, drag and drop
   * ------------------------------------------------------------------- */
  function paint(root) {
    if (!root) return;
    var nodes = root.querySelectorAll("[data-css]");
    for (var i = 0; i < nodes.length; i++) {
      var props;
      try { props = JSON.parse(nodes[i].getAttribute("data-css")); } catch (e) { continue; }
      for (var name in props) {
        if (Object.prototype.hasOwnProperty.call(props, name)) nodes[i].style.setProperty(name, props[name]);
      }
    }
  }

  function selectedId() {
    var input = document.getElementById("editor-selected");
    return input ? input.value : "";
  }

  function blockEl(id) {
    return id ? document.getElementById("block-" + id) : null;
  }

  function markSelected(id) {
    document.getElementById("editor-selected").value = id || "";
    var current = stage.querySelectorAll(".block.is-selected");
    for (var i = 0; i < current.length; i++) {
      current[i].classList.remove("is-selected");
      current[i].removeAttribute("aria-current");
    }
    var block = blockEl(id);
    if (block) {
      block.classList.add("is-selected");
      block.setAttribute("aria-current", "true");
    }
  }

  function select(id, moveFocus) {
    flushFields();
    markSelected(id);
    focusPanel = !!moveFocus;
    send(urls.selectUrl, { select_id: id || "" }, "#editor-panel-slot");
  }

  // The position a dropped element takes among the blocks of its list.
  function positionIn(list, item) {
    var n = 0;
    for (var el = list.firstElementChild; el && el !== item; el = el.nextElementSibling) {
      if (el.classList.contains("block")) n++;
    }
    return n;
  }

  function dragStart() {
    flushFields();
    editor.classList.add("is-dragging");
  }

  function canDrop(to, from, dragEl) {
    return !(to.el.getAttribute("data-parent") && dragEl.getAttribute("data-type") === "columns");
  }

  var dragOptions = {
    forceFallback: true, // mouse, touch and test drivers behave the same
    fallbackOnBody: true,
    fallbackTolerance: 4, // a click is not a drag
    swapThreshold: 0.65,
    emptyInsertThreshold: 24,
    animation: 150,
    ghostClass: "is-ghost",
    chosenClass: "is-chosen",
    dragClass: "is-dragging",
    preventOnFilter: false
  };

  function options(extra) {
    var result = {};
    var key;
    for (key in dragOptions) result[key] = dragOptions[key];
    for (key in extra) result[key] = extra[key];
    return result;
  }

  function blockMoved(evt) {
    editor.classList.remove("is-dragging");
    if (evt.from === evt.to && evt.oldIndex === evt.newIndex) return;
    var item = evt.item;
    focusAfter = { id: item.getAttribute("data-id") };
    runOp({
      op: "move", id: item.getAttribute("data-id"),
      to_parent: evt.to.getAttribute("data-parent") || "", to_index: String(positionIn(evt.to, item))
    });
  }

  function paletteDropped(evt) {
    editor.classList.remove("is-dragging");
    if (evt.to === palette) return;
    var item = evt.item;
    var list = evt.to;
    var index = positionIn(list, item);
    if (item.parentNode) item.parentNode.removeChild(item); // the server draws the real block
    focusAfter = { added: true };
    runOp({
      op: "add", type: item.getAttribute("data-type"), count: item.getAttribute("data-count") || "",
      to_parent: list.getAttribute("data-parent") || "", to_index: String(index)
    });
  }

  function initSortables() {
    if (!window.Sortable) return;
    for (var i = 0; i < sortables.length; i++) sortables[i].destroy();
    sortables = [];
    var lists = stage.querySelectorAll(".block-list");
    for (var j = 0; j < lists.length; j++) {
      sortables.push(Sortable.create(lists[j], options({
        group: { name: "blocks", pull: true, put: canDrop },
        draggable: ".block",
        filter: ".block-tool",
        onStart: dragStart,
        onEnd: blockMoved
      })));
    }
  }

  function canvasDrawn(op) {
    paint(stage);
    initSortables();
    if (op === "update" || op === "settings") return; // typing in the panel: the focus stays there
    var target = null;
    if (focusAfter && focusAfter.added) {
      target = blockEl(selectedId());
    } else if (focusAfter && focusAfter.op === "duplicate") {
      target = blockEl(selectedId());
    } else if (focusAfter && focusAfter.op) {
      var block = blockEl(focusAfter.id);
      var tool = block && block.querySelector('[data-op="' + focusAfter.op + '"]');
      target = tool && !tool.disabled ? tool : block;
    } else if (focusAfter && focusAfter.id) {
      target = blockEl(focusAfter.id);
    }
    if (focusAfter && focusAfter.op === "delete") target = document.getElementById("editor-canvas");
    focusAfter = null;
    if (target) {
      target.focus({ preventScroll: true });
      target.scrollIntoView({ block: "nearest" });
    }
  }

  // Inputs whose error text (#field-error-<key>) is showing are marked invalid (red border, read out).
  function markInvalid() {
    var panel = document.getElementById("editor-panel");
    if (!panel) return;
    var errors = panel.querySelectorAll(".field-error");
    for (var i = 0; i < errors.length; i++) {
      var showing = !errors[i].hidden && errors[i].textContent.trim() !== "";
      var inputs = panel.querySelectorAll('[aria-describedby~="' + errors[i].id + '"]');
      for (var j = 0; j < inputs.length; j++) {
        if (showing) inputs[j].setAttribute("aria-invalid", "true");
        else inputs[j].removeAttribute("aria-invalid");
      }
    }
  }

  function panelDrawn() {
    var panel = document.getElementById("editor-panel");
    if (!panel) return;
    markInvalid();
    var colors = panel.querySelectorAll("[data-color-none]");
    for (var i = 0; i < colors.length; i++) colorNoneChanged(colors[i]);
    if (focusPanel) {
      focusPanel = false;
      var first = panel.querySelector(
        ".panel-section input:not([type=hidden]):not(.sr-only), .panel-section select:not([data-merge-tag]), " +
        ".panel-section textarea, .panel-section [contenteditable]");
      (first || panel.querySelector("h2")).focus();
    }
  }

  document.addEventListener("htmx:afterSwap", function (evt) {
    var target = evt.detail.target;
    if (!target) return;
    if (target.id === "editor-stage") {
      var params = evt.detail.requestConfig && evt.detail.requestConfig.parameters;
      canvasDrawn(params && params.op);
    }
    if (target.id === "editor-panel-slot") panelDrawn();
  });

  document.addEventListener("htmx:oobAfterSwap", function (evt) {
    var target = evt.detail.target;
    if (target && target.id === "editor-panel") panelDrawn();
  });

  /* ---------------------------------------------------------------------
   * The settings panel: changes are sent a moment after typing stops
   * ------------------------------------------------------------------- */
  function addValue(values, name, value) {
    if (!Object.prototype.hasOwnProperty.call(values, name)) {
      values[name] = value;
    } else {
      if (!Array.isArray(values[name])) values[name] = [values[name]];
      values[name].push(value);
    }
  }

  function collect(form, key, values) {
    var fields = form.querySelectorAll("[data-key]");
    for (var i = 0; i < fields.length; i++) {
      var el = fields[i];
      if (el.getAttribute("data-key") !== key || !el.name || el.disabled) continue;
      if ((el.type === "checkbox" || el.type === "radio") && !el.checked) continue;
      addValue(values, el.name, el.value);
    }
  }

  function fieldChanged(form, key) {
    if (pendingForm && pendingForm !== form) flushFields();
    pendingForm = form;
    pendingKeys[key] = true;
    showStatus("dirty", "Unsaved changes…");
    clearTimeout(fieldTimer);
    fieldTimer = setTimeout(flushFields, FIELD_DELAY);
  }

  function flushFields() {
    clearTimeout(fieldTimer);
    fieldTimer = null;
    var form = pendingForm;
    var keys = Object.keys(pendingKeys);
    pendingForm = null;
    pendingKeys = {};
    if (!form || !keys.length) return;
    var values = { op: form.getAttribute("data-panel-op"), id: form.getAttribute("data-id") };
    for (var i = 0; i < keys.length; i++) collect(form, keys[i], values);
    send(urls.opsUrl, values, "#editor-stage");
  }

  function updateColorCode(input) {
    var row = input.closest(".color-row");
    var out = row && row.querySelector("[data-color-code]");
    if (out) out.textContent = input.disabled ? "\u2014" : input.value;
  }

  function colorNoneChanged(box) {
    var input = document.getElementById(box.getAttribute("data-color-none"));
    if (!input) return;
    input.disabled = box.checked;
    updateColorCode(input);
  }

  // Rich text: a contenteditable area mirrored into its hidden f.<key> input.
  function syncRichText(area) {
    var input = document.getElementById(area.getAttribute("data-rte-area"));
    if (input) input.value = area.innerHTML;
    return input;
  }

  function rememberRange(area) {
    var sel = window.getSelection();
    if (sel && sel.rangeCount && area.contains(sel.anchorNode)) area._range = sel.getRangeAt(0).cloneRange();
  }

  function restoreRange(area) {
    area.focus();
    if (!area._range) return;
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(area._range);
  }

  document.addEventListener("selectionchange", function () {
    var sel = window.getSelection();
    var node = sel && sel.anchorNode;
    var el = node && (node.nodeType === 1 ? node : node.parentElement);
    var area = el && el.closest && el.closest("[data-rte-area]");
    if (area) rememberRange(area);
  });

  function richTextCommand(button) {
    var box = button.closest("[data-rte]");
    var area = box && box.querySelector("[data-rte-area]");
    if (!area) return;
    var command = button.getAttribute("data-command");
    var value = null;
    if (command === "createLink") {
      value = window.prompt("Link address (https://…, mailto:… or a merge tag)", "https://");
      if (!value || value === "https://") return;
    }
    restoreRange(area);
    document.execCommand(command, false, value);
    richTextEdited(area);
  }

  function richTextEdited(area) {
    var input = syncRichText(area);
    var form = area.closest("#editor-panel-form");
    if (input && form) fieldChanged(form, input.getAttribute("data-key"));
  }

  function insertMergeTag(tag) {
    var panel = document.getElementById("editor-panel-form");
    if (!tag || !panel) return;
    var target = lastField && panel.contains(lastField) ? lastField
      : panel.querySelector("[data-rte-area], input[data-key='text']");
    if (!target) return;
    if (target.hasAttribute("data-rte-area")) {
      restoreRange(target);
      document.execCommand("insertText", false, tag);
      richTextEdited(target);
      return;
    }
    var start = target.value.length;
    var end = start;
    try {
      if (target.selectionStart !== null) { start = target.selectionStart; end = target.selectionEnd; }
    } catch (e) { /* url inputs have no selection: append */ }
    if (start > 0 && /[^\s(]/.test(target.value.charAt(start - 1))) tag = " " + tag; // not glued to a word
    target.value = target.value.slice(0, start) + tag + target.value.slice(end);
    target.focus();
    target.dispatchEvent(new Event("input", { bubbles: true }));
  }

  document.addEventListener("focusin", function (evt) {
    var el = evt.target;
    if (!el.closest || !el.closest("#editor-panel-form")) return;
    if (el.hasAttribute("data-rte-area") || (el.matches("input[data-key]") && /^(text|url)$/.test(el.type))) lastField = el;
  });

  document.addEventListener("input", function (evt) {
    var el = evt.target;
    if (!el.closest) return;
    if (el.hasAttribute("data-rte-area")) {
      richTextEdited(el);
      return;
    }
    if (el.type === "color") updateColorCode(el);
    var form = el.closest("#editor-panel-form");
    if (form && el.getAttribute("data-key")) {
      fieldChanged(form, el.getAttribute("data-key"));
    } else if (el.name === "source" && el.closest("[data-code-form]")) {
      codeDirty = true;
      showStatus("dirty", "Unsaved changes…");
    }
  });

  document.addEventListener("change", function (evt) {
    var el = evt.target;
    if (!el.matches) return;
    if (el.matches("[data-merge-tag]")) {
      insertMergeTag(el.value);
      el.value = "";
    } else if (el.matches("[data-color-none]")) {
      colorNoneChanged(el);
    } else if (el.matches("#image-upload")) {
      upload(el);
    } else if (el.matches("select[data-code-format]")) {
      if (!codeDirty || window.confirm("Show the design as " + el.options[el.selectedIndex].text + "? Your edits to the code are discarded.")) {
        codeDirty = false;
        loadSource(el.value);
      }
    }
  });

  // Pasted text arrives as plain text: the email keeps only its own small set of formatting.
  document.addEventListener("paste", function (evt) {
    var area = evt.target.closest && evt.target.closest("[data-rte-area]");
    if (!area) return;
    evt.preventDefault();
    var text = (evt.clipboardData || window.clipboardData).getData("text/plain");
    document.execCommand("insertText", false, text);
  });

  document.addEventListener("mousedown", function (evt) {
    // keep the text selection when a formatting button is pressed
    if (evt.target.closest && evt.target.closest(".rte-button")) evt.preventDefault();
  });

  function linksAction(button) {
    var form = button.closest("#editor-panel-form");
    if (!form) return;
    flushFields();
    var values = { op: "update", id: form.getAttribute("data-id"), links_action: button.getAttribute("data-links-action") };
    collect(form, "links", values);
    send(urls.opsUrl, values, "#editor-stage");
  }

  /* ---------------------------------------------------------------------
   * Image upload (POST /templates/uploads answers {"url", "id"} or 422 {"error"})
   * ------------------------------------------------------------------- */
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function upload(input) {
    var file = input.files && input.files[0];
    var form = input.closest("#editor-panel-form");
    var status = form && form.querySelector("[data-upload-status]");
    if (!file || !form) return;
    status.textContent = "Uploading " + file.name + "…";
    var body = new FormData();
    body.append("file", file);
    fetch(input.getAttribute("data-upload-url"), {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), "Accept": "application/json" }
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok || !data.url) throw new Error(data.error || "the server answered " + response.status + ".");
        return data;
      });
    }).then(function (data) {
      var src = form.querySelector("input[data-key='src']");
      src.value = data.url;
      fieldChanged(form, "src");
      flushFields();
      status.textContent = "Uploaded " + file.name + ". Describe it in the alt text below.";
    }).catch(function (error) {
      status.textContent = "Not uploaded: " + (error.message || "try again.");
    }).then(function () {
      input.value = "";
    });
  }

  /* ---------------------------------------------------------------------
   * Tabs: Design, Code, Preview, History
   * ------------------------------------------------------------------- */
  var tabs = Array.prototype.slice.call(editor.querySelectorAll("[role=tab]"));

  function showTab(name, focus) {
    hideMessage();
    tabs.forEach(function (tab) {
      var on = tab.getAttribute("data-tab") === name;
      tab.setAttribute("aria-selected", on ? "true" : "false");
      tab.tabIndex = on ? 0 : -1;
      document.getElementById(tab.getAttribute("aria-controls")).hidden = !on;
      if (on && focus) tab.focus();
    });
    if (name === "preview") loadPreview();
    if (name === "history") loadHistory();
    if (name === "code" && blocksMode && !codeDirty) {
      var format = document.querySelector("select[data-code-format]");
      loadSource(format ? format.value : "mjml");
    }
  }

  function loadSource(format) {
    flushFields();
    send(urls.sourceUrl, { format: format }, "#editor-code-slot");
  }

  function loadHistory() {
    htmx.ajax("GET", urls.historyUrl, { target: "#editor-history-slot", swap: "innerHTML" });
  }

  function loadPreview() {
    var frame = document.getElementById("editor-preview");
    var url = frame && frame.getAttribute("data-src");
    if (url && frame.getAttribute("src") !== url) frame.setAttribute("src", url);
  }

  function refreshPreview(url) {
    var frame = document.getElementById("editor-preview");
    if (!frame || !url) return;
    frame.setAttribute("data-src", url);
    if (!document.getElementById("view-preview").hidden) loadPreview();
  }

  function previewSize(button) {
    var stageEl = document.getElementById("preview-stage");
    stageEl.setAttribute("data-size", button.getAttribute("data-preview-size"));
    var buttons = button.parentNode.querySelectorAll("[data-preview-size]");
    for (var i = 0; i < buttons.length; i++) buttons[i].setAttribute("aria-pressed", String(buttons[i] === button));
  }

  /* ---------------------------------------------------------------------
   * Code view and history
   * ------------------------------------------------------------------- */
  function saveCode() {
    var form = document.querySelector("[data-code-form]");
    if (!form) return;
    if (form.getAttribute("data-mode") === "blocks") flushFields(); // the design is saved before the switch
    showStatus("saving", "Saving…");
    send(urls.codeUrl, {
      format: form.querySelector("[data-code-format]").value,
      source: form.querySelector("[name=source]").value
    }, "#editor-status-slot");
  }

  function restore(number) {
    flushFields();
    send(urls.restoreUrl, { number: number }, "#editor-history-slot", "none");
  }

  /* ---------------------------------------------------------------------
   * Clicks and keys
   * ------------------------------------------------------------------- */
  document.addEventListener("click", function (evt) {
    var t = evt.target;
    if (!t.closest) return;
    var el;
    if ((el = t.closest("#editor-stage [data-op]"))) {
      var id = el.closest(".block").getAttribute("data-id");
      focusAfter = { id: id, op: el.getAttribute("data-op") };
      runOp({ op: el.getAttribute("data-op"), id: id });
    } else if ((el = t.closest("[data-add]"))) {
      focusAfter = { added: true };
      runOp({ op: "add", type: el.getAttribute("data-add"), count: el.getAttribute("data-count") || "" });
    } else if ((el = t.closest(".rte-button"))) {
      richTextCommand(el);
    } else if ((el = t.closest("[data-select]"))) {
      var previous = selectedId();
      select(el.getAttribute("data-select") || null, el.getAttribute("data-select") !== "");
      if (!el.getAttribute("data-select") && blockEl(previous)) blockEl(previous).focus();
    } else if ((el = t.closest("[data-links-action]"))) {
      linksAction(el);
    } else if ((el = t.closest("[data-restore]"))) {
      restore(el.getAttribute("data-restore"));
    } else if ((el = t.closest("[data-code-save]"))) {
      saveCode();
    } else if ((el = t.closest("[data-save-now]"))) {
      saveNow(true);
    } else if ((el = t.closest("[data-dismiss-message]"))) {
      hideMessage();
    } else if ((el = t.closest("[data-preview-size]"))) {
      previewSize(el);
    } else if ((el = t.closest("[role=tab]"))) {
      showTab(el.getAttribute("data-tab"), false);
    } else if (t.closest("#editor-stage")) {
      if (t.closest("a")) evt.preventDefault(); // links in the email do not leave the editor
      el = t.closest(".block");
      if (el && el.getAttribute("data-id") !== selectedId()) select(el.getAttribute("data-id"), false);
      else if (!el && !t.closest(".email-body") && selectedId()) select(null, false);
    }
  });

  document.addEventListener("keydown", function (evt) {
    var t = evt.target;
    if (!t.closest) return;
    if ((evt.ctrlKey || evt.metaKey) && (evt.key === "s" || evt.key === "S")) {
      evt.preventDefault();
      var code = document.querySelector("[data-code-form]");
      if (!blocksMode && code) saveCode();
      else saveNow(true);
      return;
    }
    if ((evt.key === "Enter" || evt.key === " ") && t.matches("#editor-stage .block")) {
      evt.preventDefault();
      select(t.getAttribute("data-id"), true);
      return;
    }
    if (evt.key === "Escape" && selectedId() && (t.closest("#editor-stage") || t.closest("#editor-panel-slot"))) {
      var id = selectedId();
      select(null, false);
      var block = blockEl(id);
      if (block) block.focus();
      return;
    }
    if (t.matches("[role=tab]") && /^(ArrowLeft|ArrowRight|Home|End)$/.test(evt.key)) {
      evt.preventDefault();
      var index = tabs.indexOf(t);
      if (evt.key === "ArrowLeft") index = (index - 1 + tabs.length) % tabs.length;
      if (evt.key === "ArrowRight") index = (index + 1) % tabs.length;
      if (evt.key === "Home") index = 0;
      if (evt.key === "End") index = tabs.length - 1;
      showTab(tabs[index].getAttribute("data-tab"), true);
    }
  });

  // The editor's forms are never submitted: their fields travel with the requests above.
  document.addEventListener("submit", function (evt) {
    if (evt.target.closest && evt.target.closest("#editor")) {
      evt.preventDefault();
      flushFields();
    }
  });

  /* ---------------------------------------------------------------------
   * Start
   * ------------------------------------------------------------------- */
  function start() {
    rememberSaved();
    if (blocksMode && stage) {
      document.execCommand("defaultParagraphSeparator", false, "p");
      paint(stage);
      initSortables();
      panelDrawn();
      if (palette && window.Sortable) {
        Sortable.create(palette, options({
          group: { name: "blocks", pull: "clone", put: false },
          sort: false,
          draggable: ".palette-item",
          filter: ".palette-add",
          onStart: dragStart,
          onEnd: paletteDropped
        }));
      }
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
