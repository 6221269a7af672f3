// The dashboard's growth chart, drawn from the per-day table beside it (the table is the data: the chart
// adds nothing the table does not say). Colours come from the stylesheet, so dark mode follows.
"use strict";
(function () {
  var canvas = document.getElementById("growth-chart");
  var rows = document.querySelectorAll("#growth-days tbody tr");
  if (!canvas || !rows.length || typeof Chart === "undefined") return;
  var style = getComputedStyle(document.documentElement);
  function colour(name) { return style.getPropertyValue(name).trim(); }
  var labels = [], joined = [], left = [], net = [];
  rows.forEach(function (row) {
    var j = Number(row.dataset.joined), l = Number(row.dataset.left);
    labels.push(row.dataset.day.slice(5));
    joined.push(j);
    left.push(-l);
    net.push(j - l);
  });
  Chart.defaults.color = colour("--muted");
  Chart.defaults.borderColor = colour("--line");
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  new Chart(canvas, {
    data: {
      labels: labels,
      datasets: [
        { type: "bar", label: "Joined", data: joined, backgroundColor: colour("--accent"), stack: "s" },
        { type: "bar", label: "Left", data: left, backgroundColor: colour("--error"), stack: "s" },
        { type: "line", label: "Net", data: net, borderColor: colour("--fg"), backgroundColor: colour("--fg"),
          pointRadius: 0, borderWidth: 2, tension: 0.2 }
      ]
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: { x: { stacked: true, ticks: { maxTicksLimit: 8 } }, y: { stacked: true, ticks: { precision: 0 } } },
      plugins: {
        legend: { position: "bottom" },
        tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + Math.abs(c.parsed.y); } } }
      }
    }
  });
})();
