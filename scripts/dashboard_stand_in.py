"""Draw the Grafana dashboard's panels from real scrapes, for the docs (there is no Grafana here).

Reads the scrapes `tests/test_metrics.py` keeps (a prefork worker scraped every ~0.3 s during a real
campaign, and the web's /metrics) from test-output/test_metrics/scrapes.json, evaluates each panel of
deploy/grafana/newsletter.json that the scrapes can answer (rates as differences between scrapes,
quantiles from the histogram buckets), draws them with the vendored Chart.js in a local HTML page and
screenshots it with Chromium. The picture is of this stand-in, not of Grafana.

    .venv/bin/pytest -q tests/test_metrics.py -k worker && .venv/bin/python scripts/dashboard_stand_in.py
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
SCRAPES = ROOT / "test-output/test_metrics/scrapes.json"
OUT = ROOT / "docs/newsletter-dashboard.png"
CHART_JS = ROOT / "newsletter/web/static/vendor/chartjs/chart.umd.min.js"

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Sample:
    found: Sample = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def by(samples: Sample, name: str, label: str | None) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (n, labels), value in samples.items():
        if n == name:
            out[dict(labels).get(label, "") if label else name] += value
    return out


Lines = dict[str, list[float]]


def rates(series: list[tuple[float, Sample]], name: str, label: str | None) -> tuple[list[float], Lines]:
    """Per-second increase between successive scrapes, per label value."""
    times: list[float] = []
    lines: Lines = defaultdict(list)
    for (t0, a), (t1, b) in itertools.pairwise(series):
        if t1 <= t0:
            continue
        times.append(round(t1, 1))
        before, after = by(a, name, label), by(b, name, label)
        for key in set(before) | set(after):
            lines[key].append(round((after.get(key, 0) - before.get(key, 0)) / (t1 - t0), 2))
    return times, dict(lines)


def quantile(samples: Sample, name: str, q: float) -> float:
    buckets = sorted(
        (float(dict(labels)["le"]), value) for (n, labels), value in samples.items() if n == f"{name}_bucket"
    )
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= q * total:
            return bound
    return 0.0


def gauge(series: list[tuple[float, Sample]], name: str, label: str) -> Lines:
    lines: dict[str, list[float]] = defaultdict(list)
    for _, sample in series[1:]:
        for key, value in by(sample, name, label).items():
            lines[key].append(value)
    return dict(lines)


def panels(data: dict[str, object]) -> list[dict[str, object]]:
    series = [(float(t), parse(text)) for t, text in data["worker"] if text]  # type: ignore[attr-defined]
    web = parse(str(data["web"]))
    last = series[-1][1]
    times, messages = rates(series, "newsletter_messages_total", "result")
    _, replies = rates(series, "newsletter_smtp_replies_total", "code_class")
    _, waits = rates(series, "newsletter_rate_limit_wait_seconds_total", None)
    return [
        {"title": "Messages per second by result", "x": times, "lines": messages},
        {"title": "SMTP replies per second by class", "x": times, "lines": replies},
        {"title": "Rate-limit wait (s per s)", "x": times, "lines": waits},
        {"title": "Open SMTP connections", "x": times,
         "lines": gauge(series, "newsletter_smtp_connections", "server")},
        {"title": "Send time per group, p50 / p95 (s)", "bars": {
            "p50": quantile(last, "newsletter_send_seconds", 0.5),
            "p95": quantile(last, "newsletter_send_seconds", 0.95)}},
        {"title": "Batch time and queue latency, p95 (s)", "bars": {
            "batch": quantile(last, "newsletter_batch_seconds", 0.95),
            "queue latency": quantile(last, "newsletter_queue_latency_seconds", 0.95)}},
        {"title": "Campaign recipients by status (web, mid-send)",
         "bars": by(web, "newsletter_campaign_recipients", "status")},
        {"title": "Subscribers by status (web)", "bars": by(web, "newsletter_subscribers", "status")},
        {"title": "Queue depth (web, mid-send)", "bars": by(web, "newsletter_queue_depth", None)},
    ]  # fmt: skip


PAGE = """<!doctype html><meta charset=utf-8><title>newsletter dashboard (stand-in)</title>
<style>body{font:14px system-ui,sans-serif;margin:16px;background:#111217;color:#ccccdc}
h1{font-size:18px;margin:0 0 4px}p{margin:0 0 12px;color:#8e8e9e}
.grid{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:12px}
.panel{background:#181b1f;border:1px solid #2c3235;border-radius:4px;padding:8px}
.panel h2{font-size:13px;margin:0 0 6px;font-weight:500}canvas{height:220px!important}</style>
<h1>newsletter</h1><p>A stand-in for deploy/grafana/newsletter.json: the same panels drawn with Chart.js from real
scrapes of a prefork worker (2 processes) and /metrics during a 600-recipient campaign (tests/test_metrics.py).</p>
<div class=grid id=grid></div><script src="CHART"></script><script>
const panels = PANELS, colors = ["#73bf69","#f2cc0c","#f2495c","#5794f2","#b877d9","#ff9830"];
Chart.defaults.color = "#ccccdc"; Chart.defaults.borderColor = "#2c3235"; Chart.defaults.animation = false;
for (const p of panels) {
  const div = document.createElement("div"); div.className = "panel";
  div.innerHTML = `<h2>${p.title}</h2><canvas></canvas>`; document.getElementById("grid").append(div);
  const ctx = div.querySelector("canvas");
  if (p.bars) new Chart(ctx, {type: "bar", data: {labels: Object.keys(p.bars), datasets: [{data: Object.values(p.bars),
      backgroundColor: colors}]}, options: {plugins: {legend: {display: false}}, maintainAspectRatio: false}});
  else new Chart(ctx, {type: "line", data: {labels: p.x, datasets: Object.entries(p.lines).map(([k, v], i) => ({
      label: k, data: v, borderColor: colors[i % 6], pointRadius: 0, tension: 0.2}))},
      options: {maintainAspectRatio: false, scales: {x: {title: {display: true, text: "seconds"}}}}});
}
</script>"""


def main() -> int:
    data = json.loads(SCRAPES.read_text())
    html = PAGE.replace("PANELS", json.dumps(panels(data))).replace("CHART", CHART_JS.as_uri())
    with tempfile.TemporaryDirectory() as directory:
        page = Path(directory) / "dashboard.html"
        page.write_text(html)
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,880",
             f"--screenshot={OUT}", "--virtual-time-budget=3000", page.as_uri()],
            check=True, capture_output=True,
        )  # fmt: skip
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
