// The campaign report's chart: opens (estimates) and clicks per hour, from the JSON the page carries.
// The same numbers are in the table under the chart. Colours follow the stylesheet (light or dark).
(function () {
  "use strict";
  function draw() {
    var data = document.getElementById("timeline-data");
    var canvas = document.getElementById("timeline-chart");
    if (!data || !canvas || typeof Chart === "undefined") return;
    var series = JSON.parse(data.textContent);
    var style = getComputedStyle(document.documentElement);
    var colour = function (name) { return style.getPropertyValue(name).trim(); };
    var labels = series.labels.map(function (s) { return s.slice(5, 13) + "h"; });
    Chart.defaults.color = colour("--muted");
    Chart.defaults.borderColor = colour("--line");
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: labels,
        datasets: [
          { label: "Opens (estimate)", data: series.opens, backgroundColor: colour("--accent") },
          { label: "Clicks", data: series.clicks, backgroundColor: colour("--ok") }
        ]
      },
      options: {
        maintainAspectRatio: false,
        animation: false,
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { legend: { position: "bottom" } }
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
