"""A model switch through ``user_config`` and a poll of the old URI that is loading at the same
moment: the switched-to model must win on that replica (CI once saw a replica keep the polled
weights after the switch). The replica class is used without a Ray cluster; loading is
replaced by a fake that the test holds mid-load, so the interleaving is forced, not hoped for.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import serving.app as app


@dataclass
class FakeModel:
    version: str
    artifact_dir: Path


def _replica(model_uri: str) -> Any:
    """A replica object with only what ``reload`` and ``reconfigure`` touch."""
    cls = app.RankingDeployment.func_or_class
    replica = object.__new__(cls)
    replica.cfg = app.ServingConfig(model_uri=model_uri)
    replica.engine_cfg = None
    replica.metrics = app.Metrics()
    replica.model = FakeModel("v-old", Path(model_uri))
    replica.model_uri = model_uri
    replica.reload_lock = asyncio.Lock()
    replica.load_error = ""
    return replica


def _patch(monkeypatch: pytest.MonkeyPatch, **names: Any) -> None:
    """Replace module-level names as the replica's methods see them (Serve's ingress wrapper
    rebuilds the class, so its methods' globals are not ``serving.app``'s dict)."""
    namespace = app.RankingDeployment.func_or_class.reload.__globals__
    for name, value in names.items():
        monkeypatch.setitem(namespace, name, value)


async def _reconfigure(replica: Any, user_config: dict[str, Any]) -> None:
    """Call ``reconfigure`` as Serve does: await it, or run it on a thread when it is sync."""
    if inspect.iscoroutinefunction(replica.reconfigure):
        await replica.reconfigure(user_config)
    else:
        await asyncio.to_thread(replica.reconfigure, user_config)


def test_a_switch_during_a_poll_of_the_old_uri_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"polled": "v-polled-new", "switched": "v-switched"}
    poll_loading = threading.Event()
    release_poll = threading.Event()

    def resolve(uri: str) -> tuple[str, Path]:
        return versions[uri], Path(uri)

    def load(uri: str, _vectors: Any, _engine: Any, resolved: Any = None) -> FakeModel:
        if uri == "polled":  # the poll found new weights at the old URI: hold it mid-load
            poll_loading.set()
            assert release_poll.wait(10)
        return FakeModel(versions[uri], Path(uri))

    _patch(monkeypatch, resolve_model_uri=resolve, load_served_model=load,
           warm_up=lambda model: None)
    replica = _replica("polled")

    async def scenario() -> None:
        poll = asyncio.create_task(replica.reload())
        await asyncio.to_thread(poll_loading.wait, 10)
        switch = asyncio.create_task(_reconfigure(replica, {"model_uri": "switched"}))
        await asyncio.sleep(0.05)  # the switch is now waiting or (before the fix) done
        release_poll.set()
        await asyncio.gather(poll, switch)

    asyncio.run(scenario())
    assert replica.model.version == "v-switched"
    assert replica.model_uri == "switched"


def test_a_switch_to_a_bad_uri_keeps_the_model_and_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(uri: str) -> tuple[str, Path]:
        raise FileNotFoundError(f"no model at {uri}")

    _patch(monkeypatch, resolve_model_uri=resolve)
    replica = _replica("good")
    asyncio.run(_reconfigure(replica, {"model_uri": "missing"}))
    assert replica.model.version == "v-old" and replica.model_uri == "good"
    assert "no model at missing" in replica.load_error
