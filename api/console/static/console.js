/*
 * Pocketflows Sync console: live figures without a reload.
 *
 * Every element with a data-live-url attribute is a region the server also renders alone at that URL. Every
 * PERIOD_MS, while the tab is visible, each region is fetched again and swapped in; while the tab is hidden
 * nothing is fetched, and on return the regions are refreshed at once. A session that ended (401) reloads the
 * page, which leads to the sign-in form. No library, no build step: the server renders all the HTML.
 */
(function () {
  "use strict";

  var PERIOD_MS = 4000; // under the 5 s the console promises, with room for the request itself
  var timer = null;
  var inFlight = false;

  function regions() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live-url]"));
  }

  function schedule() {
    if (timer === null && !document.hidden && regions().length) {
      timer = window.setTimeout(refresh, PERIOD_MS);
    }
  }

  function markStale(region, stale) {
    region.classList.toggle("stale", stale);
    region.setAttribute("aria-busy", "false");
  }

  function refreshRegion(region) {
    region.setAttribute("aria-busy", "true");
    return window
      .fetch(region.getAttribute("data-live-url"), {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "text/html" },
      })
      .then(function (response) {
        if (response.status === 401) {
          window.location.reload();
          throw new Error("signed out");
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        region.innerHTML = html;
        markStale(region, false);
      })
      .catch(function () {
        markStale(region, true);
      });
  }

  function refresh() {
    timer = null;
    if (document.hidden || inFlight) {
      return;
    }
    inFlight = true;
    Promise.all(regions().map(refreshRegion)).then(function () {
      inFlight = false;
      schedule();
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      if (timer !== null) {
        window.clearTimeout(timer);
        timer = null;
      }
    } else if (timer === null) {
      refresh();
    }
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", schedule);
  } else {
    schedule();
  }
})();
