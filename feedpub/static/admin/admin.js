// The dashboard's two moving parts: the audience chart (uPlot, drawn from the panel's
// JSON; the same numbers are in the table below it) and the queue tiles, refreshed by
// polling their JSON. Without JavaScript the page shows the same data as tables.
"use strict";
(function () {
  var css = function (name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  };

  function colourOf(key, group, index) {
    if (group === "email") return css("--c-" + key) || css("--c-other");
    if (key === "other") return css("--c-other");
    return css("--c-feed-" + (index % 5));
  }

  function drawAudience(box, data) {
    var labels = JSON.parse(box.dataset.labels || "{}");
    var days = data.days.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
    // Stacked: each series is drawn as its running total, largest first, so the
    // smaller ones paint over it; the legend shows each series' own value.
    var shown = data.series.filter(function (s) {
      return s.values.some(function (v) { return v > 0; });
    });
    var totals = [], running = days.map(function () { return 0; });
    shown.forEach(function (s) {
      running = running.map(function (v, i) { return v + s.values[i]; });
      totals.push(running.slice());
    });
    var order = shown.map(function (_, i) { return i; }).reverse();
    var feedIndex = 0;
    var colours = shown.map(function (s) {
      return colourOf(s.key, s.group, s.group === "feeds" ? feedIndex++ : 0);
    });
    var series = [{}].concat(order.map(function (i) {
      var s = shown[i];
      return {
        label: (labels[s.key] || s.key) + " (" + (s.group === "email" ? box.dataset.email : box.dataset.feeds) + ")",
        stroke: colours[i], fill: colours[i] + "cc", width: 1,
        value: function (u, v, si, idx) { return idx == null ? "–" : String(s.values[idx]); },
      };
    }));
    var text = css("--text"), grid = css("--grid");
    var axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
    var width = Math.max(box.clientWidth, 280);
    var options = {
      width: width, height: width < 500 ? 240 : 320,
      series: series,
      axes: [Object.assign({}, axis), Object.assign({ size: 60 }, axis)],
      scales: { x: { time: true } },
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    var columns = [days].concat(order.map(function (i) { return totals[i]; }));
    box.textContent = "";
    if (!shown.length) {
      box.textContent = "–";
      return null;
    }
    return new uPlot(options, columns, box);
  }

  function audience() {
    var box = document.getElementById("audience-chart");
    if (!box || typeof uPlot === "undefined") return;
    var chart = null, data = null;
    var draw = function () {
      if (chart) chart.destroy();
      chart = data ? drawAudience(box, data) : null;
      box.dataset.drawn = data ? data.days.length : "";
    };
    fetch(box.dataset.src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (json) { data = json; draw(); });
    var media = window.matchMedia("(prefers-color-scheme: dark)");
    if (media.addEventListener) media.addEventListener("change", draw);
    var last = box.clientWidth;
    window.addEventListener("resize", function () {
      if (Math.abs(box.clientWidth - last) > 20) { last = box.clientWidth; draw(); }
    });
  }

  function queue() {
    var tiles = document.getElementById("queue");
    if (!tiles) return;
    var every = (parseInt(tiles.dataset.every, 10) || 5) * 1000;
    var stamp = document.getElementById("queue-updated");
    var number = new Intl.NumberFormat(document.documentElement.lang || undefined);
    var poll = function () {
      fetch(tiles.dataset.src, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (json) {
          if (!json) return;
          tiles.querySelectorAll("[data-queue]").forEach(function (dd) {
            var value = json[dd.dataset.queue];
            if (value != null) dd.textContent = number.format(value);
          });
          if (stamp) {
            stamp.textContent = stamp.dataset.label + " " + new Date().toLocaleTimeString(document.documentElement.lang || undefined);
          }
          tiles.dataset.polled = String((parseInt(tiles.dataset.polled || "0", 10) + 1));
        })
        .catch(function () {})
        .then(function () { setTimeout(poll, every); });
    };
    setTimeout(poll, every);
  }

  document.addEventListener("DOMContentLoaded", function () { audience(); queue(); });
})();
