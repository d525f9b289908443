"""The dashboard in headless Chromium: the page loads, its script draws every plot with the
stored data, the alert list is filled; ``/metrics`` and the JSON agree with the store."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from monitoring.config import MonitoringConfig
from monitoring.dashboard import start_dashboard
from monitoring.store import Alert, MetricStore

DAY = 86_400_000


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture
def filled_store(tmp_path: Path) -> tuple[MonitoringConfig, MetricStore]:
    cfg = MonitoringConfig(metrics_url=f"sqlite:///{tmp_path}/metrics.db")
    store = MetricStore(cfg.metrics_url)
    windows = pd.DataFrame([{
        "window_start_ms": (20_000 + d) * DAY, "model_version": v, "impressions": 1000,
        "requests": 125, "click_rate": 0.06, "save_rate": 0.02, "hide_rate": 0.015,
        "engagement_rate": 0.08 - 0.004 * d, "intra_list_diversity": 0.9 - 0.01 * d,
        "topic_entropy": 3.9, "catalogue_coverage": 0.4, "rabbit_hole_similarity": 0.1}
        for d in range(4) for v in ("v1", "v2")])
    store.write_windows(windows, DAY)
    store.write_decay(pd.DataFrame({"model_version": ["v1"] * 4 + ["v2"] * 2,
                                    "age_days": [0.0, 1.0, 2.0, 3.0, 0.0, 1.0],
                                    "engagement_rate_rel": [1.0, 0.95, 0.9, 0.85, 1.0, 0.99]}))
    store.add_alerts([Alert("engagement_decay", "v1", 20_003 * DAY, "engagement_rate", 0.068,
                            0.08, 0.1, "engagement_rate of v1 fell 15 %")])
    return cfg, store


def test_dashboard_json_and_prometheus_metrics(filled_store) -> None:
    cfg, store = filled_store
    server = start_dashboard(cfg, store, port=0)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "api/dashboard", timeout=10) as resp:
            data = json.loads(resp.read())
        assert len(data["decay"]["v1"]) == 4 and data["decay"]["v1"][3][1] == pytest.approx(0.85)
        assert len(data["diversity"]["topic_entropy"]["v2"]) == 4
        assert data["alerts"][0]["kind"] == "engagement_decay"
        assert data["headline"]["alerts"] == 1
        assert data["headline"]["worst_decay_ratio"] == pytest.approx(0.85)
        with urllib.request.urlopen(server.url + "metrics", timeout=10) as resp:
            text = resp.read().decode()
        # the counter counts the store's alerts (>= 1; a test earlier in the run may have
        # written to the same process-wide store files)
        assert re.search(r'transact_monitoring_alerts_total\{kind="engagement_decay"\} '
                         r'[1-9]', text), text
        assert re.search(r'transact_monitoring_window_metric\{metric="intra_list_diversity",'
                         r'model_version="v1"\} 0\.87', text)
        assert 'transact_monitoring_engagement_decay_ratio{model_version="v1"} 0.85' in text
    finally:
        server.stop()


def test_dashboard_page_draws_plots_with_data_in_headless_chromium(filled_store,
                                                                   tmp_path: Path) -> None:
    binary = chromium_binary()
    assert binary is not None, ("no Chromium: install Debian's `chromium` package "
                                "(apt-get install -y chromium; .ci/run does it)")
    cfg, store = filled_store
    server = start_dashboard(cfg, store, port=0)
    try:
        out = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000",
             "--dump-dom", server.url],
            capture_output=True, text=True, timeout=120, check=True)
    finally:
        server.stop()
    dom = out.stdout
    assert 'data-loaded="true"' in dom, dom[-2000:]
    plots = re.findall(r'<svg[^>]*data-plot="([^"]+)"[^>]*>(.*?)</svg>', dom, flags=re.S)
    points = {name: body.count('class="point"') for name, body in plots}
    assert points == {"decay": 6, "intra_list_diversity": 8, "topic_entropy": 8,
                      "catalogue_coverage": 8, "rabbit_hole_similarity": 8, "click_rate": 8,
                      "save_rate": 8, "hide_rate": 8}
    decay_body = dict(plots)["decay"]
    assert decay_body.count('class="series"') == 2  # one curve per version
    assert dom.count('class="alert"') == 1 and "fell 15 %" in dom
    assert 'data-name="worst_decay_ratio"' in dom


def test_infra_grafana_and_prometheus_configs_name_real_metrics_on_loopback() -> None:
    import yaml

    from monitoring.alerts import MonitoringMetrics

    root = Path(__file__).resolve().parents[2] / "infra"
    scrape = yaml.safe_load((root / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    assert targets and all(t.startswith("127.0.0.1:") for t in targets)
    known = {m.name for m in MonitoringMetrics.create().registry.collect()}
    known |= {"transact_monitoring_alerts_total", "transact_rank_latency_seconds_bucket"}
    dashboard = json.loads((root / "grafana" / "transact_monitoring.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"transact_[a-z_]+", e)}
    assert used and used <= known, used - known
