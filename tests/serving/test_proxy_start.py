"""Serving start-up on a loaded machine: Ray Serve's 60 s wait for its HTTP proxy is not the end.

Ray's ``serve.start`` gives up on the proxy after a fixed 60 s; a real slow proxy cannot be
produced on demand, so ``serve.start`` is replaced here by a stand-in that raises Ray's
timeout once (the rest — the wait for the port — is real)."""

from __future__ import annotations

import socket

import pytest

from serving import app


def _raise_once(calls: list[dict]):
    def start(**options) -> None:
        calls.append(options)
        if len(calls) == 1:
            raise TimeoutError("HTTP proxies not available after 60s.")

    return start


def test_a_slow_proxy_is_waited_for_until_it_listens(monkeypatch) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(app.serve, "start", _raise_once(calls))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        app.start_serve("127.0.0.1", port, patience_s=5.0)
    assert len(calls) == 2 and calls[1]["http_options"] == {"host": "127.0.0.1", "port": port}


def test_a_proxy_that_never_listens_fails_naming_the_address(monkeypatch) -> None:
    monkeypatch.setattr(app.serve, "start", _raise_once([]))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
            app.start_serve("127.0.0.1", port, patience_s=1.0)


def test_other_start_errors_are_not_swallowed(monkeypatch) -> None:
    def start(**options) -> None:
        raise TimeoutError("controller did not start")

    monkeypatch.setattr(app.serve, "start", start)
    with pytest.raises(TimeoutError, match="controller"):
        app.start_serve("127.0.0.1", 1, patience_s=1.0)
