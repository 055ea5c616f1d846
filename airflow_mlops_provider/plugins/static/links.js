// Links out of the Airflow UI's frame.
//
// Airflow 3.3 shows plugin pages in an iframe sandboxed with "allow-scripts allow-same-origin
// allow-forms": without allow-top-navigation and allow-popups, the browser blocks a click on a
// target="_top" link (another Airflow page) or a target="_blank" one (MLflow's UI). The frame
// is same-origin with the UI, so this script hands such a click to an anchor in the UI's own
// document, which is not sandboxed. It only follows http(s) links the page itself rendered, and
// leaves modified clicks (new tab, new window) to the browser.
(function () {
  "use strict";
  if (window.top === window) {
    return;
  }
  var topDocument;
  try {
    topDocument = window.top.document;
  } catch (err) {
    return; // not framed by Airflow's own origin: leave links alone
  }
  document.addEventListener("click", function (event) {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey ||
        event.shiftKey || event.altKey) {
      return;
    }
    var link = event.target && event.target.closest ? event.target.closest("a[href]") : null;
    if (!link) {
      return;
    }
    var target = link.getAttribute("target");
    if ((target !== "_top" && target !== "_blank") ||
        (link.protocol !== "http:" && link.protocol !== "https:")) {
      return;
    }
    event.preventDefault();
    var anchor = topDocument.createElement("a");
    anchor.href = link.href;
    anchor.target = target;
    if (target === "_blank") {
      anchor.rel = "noopener noreferrer";
    }
    topDocument.body.appendChild(anchor);
    anchor.click();
    anchor.remove();
  });
})();
