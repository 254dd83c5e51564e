/*
 * API reference page: renders the OpenAPI document with Redoc 3 (vendored).
 *
 * Markup (no inline script; the CSP is script-src 'self'):
 *   <div id="api-docs" data-spec-url="/api/v1/openapi.json">
 *     <p class="muted">Loading the API reference…</p>
 *   </div>
 *   <script type="module" src="/static/js/api-docs.js"></script>
 *
 * Redoc 3's standalone bundle is an ES module, so this file is one too and
 * imports it relative to its own URL (/static/js/ -> /static/vendor/redoc/).
 *
 * Under our CSP Redoc still works fully:
 *  - it probes `Function()` once to decide whether to run search in a Worker;
 *    CSP blocks that (one "unsafe-eval" violation in the console / CSP report)
 *    and Redoc falls back to searching on the main thread;
 *  - its "Redocly" footer logo is served from /static/vendor/redoc/ (the
 *    bundle's CDN URLs are rewritten, see vendor/VERSIONS.txt);
 *  - telemetry is switched off here (connect-src 'self' would block it too).
 */
import { init } from "../vendor/redoc/redoc.standalone.js";

const el = document.getElementById("api-docs");

if (el) {
  const specUrl = el.getAttribute("data-spec-url");
  if (!specUrl) {
    el.textContent = "No API description URL (data-spec-url) was given.";
  } else {
    try {
      init(specUrl, {
        disableTelemetry: true,
        // Keep Redoc's sticky menu below our own sticky header, if any.
        scrollYOffset: () => {
          const header = document.querySelector(".docs-page > .topbar");
          return header ? header.getBoundingClientRect().height : 0;
        }
      }, el);
    } catch (err) {
      el.textContent = "The API reference could not be shown: " + err.message;
      // eslint-disable-next-line no-console
      console.error(err);
    }
  }
}
