"""Configuration: defaults from the dataclasses, files (JSON/YAML), checked overrides, one
``validate()`` behaviour, and the command line's exit codes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

import pytest
import typer

from transact.config import (
    ConfigFileError,
    config_from_dict,
    config_to_dict,
    load_config_file,
    resolve_config,
    with_overrides,
)
from transact.errors import CheckFailed, CorruptArtifact, InternalError, UserError


class Kind(StrEnum):
    A = "a"
    B = "b"


@dataclass
class Inner:
    n_layers: int = 2
    rate: float = 0.5


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    limit: int | None = None
    kind: Kind = Kind.A
    inner: Inner = field(default_factory=Inner)
    validated: int = 0

    def validate(self) -> Outer:
        if self.steps < 0:
            raise UserError(f"steps must be >= 0, got {self.steps}")
        return self


def test_defaults_then_file_then_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("steps: 3\nkind: b\ninner:\n  n_layers: 4\n")
    cfg = resolve_config(Outer, path, {"steps": None, "inner.rate": 1, "name": "y"})
    assert cfg == Outer(name="y", steps=3, kind=Kind.B, inner=Inner(n_layers=4, rate=1.0))
    assert resolve_config(Outer) == Outer()
    json_path = tmp_path / "cfg.json"
    json_path.write_text(json.dumps(config_to_dict(cfg)))
    assert resolve_config(Outer, json_path) == cfg


@pytest.mark.parametrize("data,match", [
    ({"stpes": 3}, r"unknown Outer keys \['stpes'\]"),
    ({"inner": {"layers": 1}}, r"unknown inner keys \['layers'\]"),
    ({"steps": "3"}, "steps must be an integer"),
    ({"steps": True}, "steps must be an integer"),
    ({"kind": "c"}, r"kind must be one of \['a', 'b'\]"),
    ({"inner": 3}, "inner must be a mapping"),
    ({"name": None}, "name must not be empty"),
])
def test_file_mistakes_name_the_setting(data, match):
    with pytest.raises(ConfigFileError, match=match):
        config_from_dict(Outer, data)


def test_override_paths_are_checked_not_set_blindly():
    with pytest.raises(ConfigFileError, match="unknown setting 'inner.layers'"):
        with_overrides(Outer(), {"inner.layers": 3})
    with pytest.raises(ConfigFileError, match="unknown setting 'step'"):
        with_overrides(Outer(), {"step": 3})
    cfg = with_overrides(Outer(), {"limit": 5, "inner.n_layers": 1})
    assert cfg.limit == 5 and cfg.inner.n_layers == 1 and Outer().inner.n_layers == 2


def test_validate_runs_after_overrides(tmp_path):
    with pytest.raises(UserError, match="steps must be >= 0"):
        resolve_config(Outer, None, {"steps": -1})


def test_unreadable_files_are_user_errors(tmp_path):
    with pytest.raises(ConfigFileError, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigFileError, match="not valid YAML"):
        load_config_file(bad)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigFileError, match="must hold a mapping"):
        load_config_file(listed)
    toml = tmp_path / "cfg.toml"
    toml.write_text("steps = 1")
    with pytest.raises(ConfigFileError, match=".json, .yaml or .yml"):
        load_config_file(toml)


def _configs():
    from features.processor import ProcessorConfig
    from training.pinnerformer.config import PinnerFormerConfig
    from transact.data.examples import ExampleConfig
    from transact.data.synthetic_world import WorldConfig

    return [(ProcessorConfig, {"batch_size": 0}), (PinnerFormerConfig, {"window_days": 0}),
            (ExampleConfig, {"seq_len": 0}), (WorldConfig, {"n_users": 0})]


def test_every_stage_config_validates_the_same_way():
    for cls, bad in _configs():
        cfg = cls()
        assert cfg.validate() is cfg, f"{cls.__name__}.validate() must return the config"
        name = next(iter(bad))
        with pytest.raises(UserError, match=name):
            with_overrides(cls(), bad).validate()


def _exit_code_of(err: BaseException) -> int:
    from transact_cli.errors import run_cli

    app = typer.Typer()

    @app.command()
    def boom() -> None:
        raise err

    @app.command()
    def fine() -> None:
        pass

    return run_cli(app, args=["boom"])


def test_exit_codes_tell_user_mistakes_failed_checks_and_internal_faults(capsys):
    from features.state import ProcessorFenced
    from transact.validation import ValidationFailed

    assert _exit_code_of(UserError("bad path")) == 2
    assert _exit_code_of(ConfigFileError("unknown key")) == 2
    assert _exit_code_of(CheckFailed("3 expectations failed")) == 1
    assert _exit_code_of(ValidationFailed("suite failed")) == 1
    assert _exit_code_of(ProcessorFenced("superseded by epoch 2")) == 3
    assert _exit_code_of(CorruptArtifact("model.pt unreadable")) == 3
    assert _exit_code_of(InternalError("state lost")) == 3
    assert _exit_code_of(RuntimeError("bug")) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error" in err and "bad path" in err
