"""GX checks of the offline log and dead letters; the ``transact features`` CLI."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from features.cli import app
from features.processor import OfflineLog, ProcessorConfig, open_processor, open_stream
from features.quality import check_dead_letters, check_offline_log
from features.replay import stream_scenario
from features.store import FeatureProfile


@pytest.mark.slow  # imports Great Expectations
def test_gx_accepts_the_offline_log_and_agrees_with_the_dead_letters(tmp_path):
    profile = FeatureProfile.embedded(tmp_path / "features")
    sc = stream_scenario(800, n_users=20, invalid_rate=0.03, too_late_rate=0.01,
                         duplicate_rate=0.05, seed=9)
    open_stream(profile).publish(sc.published)
    open_processor(profile, ProcessorConfig(block_ms=0), feast_online=False).run()

    log_report = check_offline_log(profile)
    assert log_report.ok, log_report.problems
    assert log_report.counts["rows"] == sc.accepted.num_rows
    dead_report = check_dead_letters(profile)
    assert dead_report.ok, dead_report.problems
    assert dead_report.counts["by_reason"] == sc.dead

    # a corrupt batch in the log (an unknown action type) must be caught
    bad = sc.accepted.slice(0, 3).set_column(
        3, "action_type", pa.array([9, 9, 9], pa.int8()))
    OfflineLog(profile.offline_log_dir).write(999_999, bad)
    broken = check_offline_log(profile)
    assert not broken.ok and "action_type" in broken.problems[0]


def test_cli_processes_reports_status_and_guards_teardown(tmp_path):
    root = tmp_path / "features"
    sc = stream_scenario(500, n_users=10, invalid_rate=0.02, seed=4)
    open_stream(FeatureProfile.embedded(root)).publish(sc.published)
    runner = CliRunner()
    out = runner.invoke(app, ["process", "--profile", "embedded", "--root", str(root),
                              "--no-feast-online", "--batch-size", "100"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)  # logs go to stderr
    assert summary["accepted"] == sc.accepted.num_rows
    assert summary["dead_letters"] == sc.dead

    status = runner.invoke(app, ["status", "--profile", "embedded", "--root", str(root)])
    assert status.exit_code == 0, status.output
    body = json.loads(status.output)
    assert body["backlog"] == 0 and body["dead_letters"] == sc.dead
    assert body["counters"]["accepted"] == sc.accepted.num_rows

    refused = runner.invoke(app, ["teardown", "--profile", "embedded", "--root", str(root)])
    assert refused.exit_code != 0 and root.exists()


def test_status_says_when_nothing_ran_and_does_not_hide_a_broken_store(tmp_path):
    root = tmp_path / "features"
    stream = open_stream(FeatureProfile.embedded(root))
    stream.publish(stream_scenario(20, n_users=3, seed=1).published)
    runner = CliRunner()
    args = ["status", "--profile", "embedded", "--root", str(root)]
    fresh = runner.invoke(app, args)
    assert fresh.exit_code == 0, fresh.output
    body = json.loads(fresh.output)
    assert body["counters"] == {} and body["backlog"] == 20
    assert "no processor" in body["note"]

    # a stats table that cannot be read is an error, not "no counters"
    stream.conn.execute("CREATE TABLE stats (name TEXT)")
    stream.conn.commit()
    broken = runner.invoke(app, args)
    assert broken.exit_code != 0
    assert "counters" not in broken.output


def test_process_takes_a_config_file_with_options_as_overrides_and_logs(tmp_path):
    root = tmp_path / "features"
    sc = stream_scenario(300, n_users=10, invalid_rate=0.05, seed=2)
    open_stream(FeatureProfile.embedded(root)).publish(sc.published)
    config = tmp_path / "processor.yaml"
    config.write_text("batch_size: 7\nstate_cache_users: 3\nblock_ms: 0\n")
    runner = CliRunner()
    base = ["process", "--profile", "embedded", "--root", str(root), "--no-feast-online"]
    out = runner.invoke(app, [*base, "--config", str(config), "--batch-size", "100",
                              "--log-level", "debug"])
    assert out.exit_code == 0, out.output
    logged = out.stderr
    # the file's settings, the option's override, the dataclass's defaults for the rest
    assert "batch_size=100" in logged and "state_cache_users=3" in logged
    assert "block_ms=0" in logged and "dedupe_bucket_ms=3600000" in logged
    assert "batch 1 (commit 1)" in logged and "processor stopped" in logged
    assert "dead-lettered" in logged  # warnings for dead letters

    config.write_text("batch_sise: 7\n")
    bad = runner.invoke(app, [*base, "--config", str(config)])
    assert bad.exit_code != 0 and "batch_sise" in str(bad.exception)
