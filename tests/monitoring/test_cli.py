"""``transact monitor compute`` and ``alerts`` on a hand-made log and dataset."""

from __future__ import annotations

from pathlib import Path

from tiny_data import write_tiny_dataset
from typer.testing import CliRunner

from monitoring.cli import app
from monitoring.logs import ParquetServingLog, rows_from_rank_answer
from transact.schema import DAY_MS, ActionType

T0 = 1_767_225_600_000


def test_compute_then_alerts(tmp_path: Path) -> None:
    log = ParquetServingLog(tmp_path / "log")
    events = []
    for day in range(2):
        for user in range(1, 6):
            t = T0 + day * DAY_MS + user * 1000
            request_id = day * 10 + user
            log.append(rows_from_rank_answer(
                {"user_id": user, "model_version": "v1", "request_time_ms": t,
                 "items": [{"item_id": i, "utility": 0.0,
                            "scores": {"click": 0.1, "save": 0.0, "hide": 0.0}}
                           for i in (1, 2, 3, 4)]}, request_id))
            if day == 0:  # every user clicks item 1 on day 0, nothing on day 1
                events.append((request_id, user, 1, int(ActionType.CLICK), t + 10))
    dataset = write_tiny_dataset(tmp_path / "dataset", events, n_items=8)
    config = tmp_path / "mon.yaml"
    config.write_text("alerts:\n  min_impressions: 10\n")
    url = f"sqlite:///{tmp_path}/m.db"
    runner = CliRunner()
    result = runner.invoke(app, ["compute", str(dataset), "--items", str(dataset),
                                 "--log-dir", str(tmp_path / "log"), "--metrics-url", url,
                                 "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "ALERT engagement_decay" in result.output
    assert '"click_rate": 0.0' in result.output and '"windows": 2' in result.output
    listed = runner.invoke(app, ["alerts", "--metrics-url", url])
    assert listed.exit_code == 0 and "engagement_decay\tv1" in listed.output
