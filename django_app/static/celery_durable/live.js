/* Live refresh of the run page and the run lists (see admin/live.py).
 *
 * The run page (its step table carries data-live-url while the run is
 * unfinished) and a run list with unfinished runs poll a small JSON endpoint
 * every two seconds and put the server's HTML (escaped by the admin's own
 * display methods) in place: no page reload. Polling stops once every run on
 * the page has finished, or when the endpoint refuses (signed out, no
 * permission). No build step, no library.
 */
(function () {
  "use strict";
  var PERIOD = 2000;
  var FINISHED = ["succeeded", "failed", "cancelled", "replaced"];

  function poll(address, apply) {
    function again() {
      fetch(address(), {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (response) {
          if (!response.ok) { throw new Error("live refresh: HTTP " + response.status); }
          return response.json();
        })
        .then(function (data) {
          if (!apply(data)) { window.setTimeout(again, PERIOD); }
        })
        .catch(function (error) { window.console && console.warn(error); });
    }
    window.setTimeout(again, PERIOD);
  }

  function fill(element, html) {
    if (element && element.innerHTML !== html) { element.innerHTML = html; }
  }

  function runPage(box) {
    var url = box.getAttribute("data-live-url");
    poll(function () { return url; }, function (data) {
      var holder = document.createElement("div");
      holder.innerHTML = data.steps;
      var fresh = holder.querySelector("#cd-timeline");
      var current = document.getElementById("cd-timeline");
      if (fresh && current) { current.replaceWith(fresh); }
      Object.keys(data.fields).forEach(function (name) {
        fill(document.querySelector(".field-" + name + " .readonly"), data.fields[name]);
      });
      document.body.setAttribute("data-cd-live-status", data.status);
      return data.finished;
    });
  }

  function unfinishedRows(table) {
    var rows = {};
    table.querySelectorAll("tbody tr").forEach(function (row) {
      var badge = row.querySelector(".field-status_display .cd-status");
      var link = row.querySelector("th.field-id a");
      if (!badge || !link) { return; }
      var status = badge.textContent.trim().toLowerCase();
      if (FINISHED.indexOf(status) === -1) { rows[link.textContent.trim()] = row; }
    });
    return rows;
  }

  function runList(table) {
    var rows = unfinishedRows(table);
    if (!Object.keys(rows).length) { return; }
    var base = window.location.pathname.replace(/\/?$/, "/") + "live/";
    function url() {
      return base + "?" + Object.keys(rows).map(function (id) {
        return "id=" + encodeURIComponent(id);
      }).join("&");
    }
    poll(url, function (data) {
      Object.keys(rows).forEach(function (id) {
        var run = data.runs[id], row = rows[id];
        if (!run) { delete rows[id]; return; }  // gone (purged): nothing to follow
        Object.keys(run.fields).forEach(function (name) {
          fill(row.querySelector("td.field-" + name), run.fields[name]);
        });
        if (run.finished) { delete rows[id]; }
      });
      return !Object.keys(rows).length;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.querySelector("#cd-timeline[data-live-url]");
    if (box) { runPage(box); }
    var table = document.querySelector("#changelist #result_list");
    if (table) { runList(table); }
  });
})();
