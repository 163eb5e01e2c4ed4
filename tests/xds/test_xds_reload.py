"""Reloads never die: every way a file can fail to load is logged, counted and skipped, the last
good state stays, the next good file applies; at start-up the same files exit 2 with one line."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_xds_cli import ROUTES, Served, write_atomically, write_endpoints

from slate.cli import main
from slate.model.routing import load_routing
from slate.xds.endpoints import load_endpoints
from slate.xds.filewatch import file_signature, watch_file

DEEP = "[" * 100_000 + "]" * 100_000

# (file, fault class, bytes); each one escaped the old watcher's `except InputError`.
FAULTS = [
    ("routes", "invalid utf-8", b'{"routes": [], "note": "\xff\xfe"}'),
    (
        "routes",
        "non-numeric predicted",
        json.dumps({"routes": [], "predicted": {"mean_latency_ms": "fast"}}).encode(),
    ),
    ("routes", "deep nesting", DEEP.encode()),
    ("endpoints", "invalid utf-8", b"services: {cart: {clusters: {w: ['\xff']}}}\n"),
    ("endpoints", "deep nesting", DEEP.encode()),
]
IDS = [f"{f}-{c}" for f, c, _ in FAULTS]

GOOD_ROUTES = json.dumps(
    {
        "routes": [
            {
                "from_service": "frontend",
                "from_cluster": "w",
                "to": "cart",
                "weights": {"w": 1.0},
            }
        ]
    }
)
GOOD_ENDPOINTS = "services: {cart: {clusters: {w: ['127.0.0.1:9']}}}\n"


@pytest.mark.parametrize(("file", "fault", "data"), FAULTS, ids=IDS)
def test_watcher_survives_the_fault_and_applies_the_next_good_file(
    tmp_path: Path, file: str, fault: str, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / ("routes.json" if file == "routes" else "endpoints.yaml")
    good = GOOD_ROUTES if file == "routes" else GOOD_ENDPOINTS
    load: Any = load_routing if file == "routes" else load_endpoints
    path.write_text(good)
    rejected: list[str] = []

    async def run() -> list[Any]:
        got: list[Any] = []
        watcher = watch_file(path, load, 0.01, file_signature(path), rejected.append)

        async def follow() -> None:
            async for value in watcher:
                got.append(value)

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        path.write_bytes(data)
        for _ in range(300):
            await asyncio.sleep(0.01)
            if rejected or task.done():
                break
        assert not task.done(), f"the watcher died on {fault}: {task.exception()!r}"
        write_atomically(path, good)
        for _ in range(300):
            await asyncio.sleep(0.01)
            if got:
                break
        task.cancel()
        return got

    got = asyncio.run(run())
    assert len(rejected) == 1, rejected
    assert str(path) in rejected[0]
    assert len(got) == 1, "the next good file was not applied"
    assert "event=reload_rejected" in caplog.text or "reload_rejected" in caplog.text


@pytest.mark.parametrize(("file", "fault", "data"), FAULTS, ids=IDS)
def test_the_same_files_at_start_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, fault: str, data: bytes
) -> None:
    routes, eps = tmp_path / "routes.json", tmp_path / "endpoints.yaml"
    routes.write_text(GOOD_ROUTES)
    eps.write_text(GOOD_ENDPOINTS)
    (routes if file == "routes" else eps).write_bytes(data)
    code = main(["xds", "serve", "--routes", str(routes), "--endpoints", str(eps), "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("slate: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_served_process_counts_failures_and_keeps_the_last_success_time(tmp_path: Path) -> None:
    routes, eps = tmp_path / "routes.json", tmp_path / "endpoints.yaml"
    routes.write_text(json.dumps(ROUTES))
    write_endpoints(eps, {"us-west": ["127.0.0.1:8080"]})
    s = Served(routes, eps, tmp_path / "serve.log")
    try:
        stamp = s.metric("slate_xds_last_reload_success_timestamp_seconds")
        assert set(stamp) == {'{file="routes"}', '{file="endpoints"}'}
        started = stamp['{file="routes"}']
        assert abs(started - time.time()) < 60
        for i, (_f, _c, data) in enumerate(f for f in FAULTS if f[0] == "routes"):
            routes.write_bytes(data)
            want = float(i + 1)
            _wait(lambda w=want: _failures(s, "routes") == w, s)
        assert s.metric("slate_xds_last_reload_success_timestamp_seconds")[
            '{file="routes"}'
        ] == pytest.approx(started)
        write_endpoints(eps, {"us-west": ["127.0.0.1:8081"]})
        routes.write_text(json.dumps(ROUTES).replace("0.8", "0.7"))
        _wait(
            lambda: (
                s.metric("slate_xds_reloads_total").get('{file="routes",result="applied"}') == 1.0
            ),
            s,
        )
        assert (
            s.metric("slate_xds_last_reload_success_timestamp_seconds")['{file="routes"}'] > started
        )
        log = s.log()
        assert log.count("event=reload_rejected") >= 3
        assert "not valid UTF-8" in log and "nested deeper than" in log and "fast" in log
    finally:
        assert s.stop() == 0, s.log()
    assert "Traceback" not in s.log()


def _failures(s: Served, file: str) -> float:
    return s.metric("slate_xds_reload_failures_total").get(f'{{file="{file}"}}', 0.0)


def _wait(cond: Any, s: Served, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out; log:\n{s.log()}")
