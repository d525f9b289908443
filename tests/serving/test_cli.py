"""``transact serve``: a wrong model or setting is a user error (exit 2), before Ray starts."""

from __future__ import annotations

from pathlib import Path

from transact_cli.errors import run_cli
from transact_cli.main import app


def test_serve_rejects_a_missing_model(tmp_path: Path) -> None:
    assert run_cli(app, args=["serve", "--model-uri", str(tmp_path / "nope")]) == 2


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    assert run_cli(app, args=["serve", "--host", "0.0.0.0", "--model-uri", str(tmp_path)]) == 2


def test_serve_config_file_unknown_key_is_a_user_error(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("modle_uri: x\n")
    assert run_cli(app, args=["serve", "--config", str(config)]) == 2
