"""Smoke test of the benchmark suite: it runs, prints its tables, leaks nothing.

No timing is asserted: these machines are shared and noisy. The fast tests
below check the ratio arithmetic on made-up figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.config import QUICK
from bench.latency import round_order

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One ``--quick`` run shared by the tests below: its output and its JSON."""
    out_json = tmp_path_factory.mktemp("quick") / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out_json)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,  # below pytest-timeout's 120 s, so the run is killed cleanly
        check=False,
    )
    detail = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, detail
    return proc, json.loads(out_json.read_text())


def test_quick_run_prints_tables(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, results = quick_run
    detail = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    for title in ("== latency", "== throughput", "== bandwidth", "== start-up"):
        assert title in proc.stdout, detail
    assert "raw TCP ping-pong (floor)" in proc.stdout, detail
    assert "raw socket floor (reused buffer)" in proc.stdout, detail
    assert "leftover processes: none" in proc.stdout, detail
    assert "errors: 0" in proc.stdout, detail
    assert results["latency"]["unpinned"]["floor"]["median_us"] > 0
    assert results["latency"]["pinned"]["floor"]["median_us"] > 0
    assert results["bandwidth"]["floor (fresh buffer)"]["gbps"] > 0


def test_quick_run_keeps_round_medians(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, results = quick_run
    for half in ("unpinned", "pinned"):
        for name in ("clustercore", "floor"):
            cell = results["latency"][half][name]
            assert len(cell["round_medians_us"]) == QUICK.latency_rounds, (half, name, cell)
            assert all(m > 0 for m in cell["round_medians_us"]), (half, name, cell)
    assert "unpinned, clustercore / peer per round" in proc.stdout


def test_only_and_peers_select(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "latency",
            "--no-pinned",
            "--peers",
            "mp.Pool",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== latency" in proc.stdout
    assert "== throughput" not in proc.stdout
    assert "loky" not in proc.stdout


def _fake_results() -> dict:
    return {
        "meta": {"python": "3", "cpu_count": 2, "affinity": [0, 1], "quick": False},
        "peers": {
            "clustercore": {"description": ""},
            "mp.Pool": {"description": ""},
            "PPE(spawn)": {"description": ""},
            "ray": {"description": "", "skipped": "ray not installed"},
        },
        "errors": [],
        "latency": {
            "unpinned": {
                "floor": {"median_us": 50.0, "p90_us": 60.0, "round_medians_us": [50.0, 40.0]},
                "clustercore": {"median_us": 90.0, "p90_us": 100.0, "round_medians_us": [90.0, 100.0]},
                "mp.Pool": {"median_us": 300.0, "p90_us": 400.0, "round_medians_us": [300.0, 200.0]},
                "PPE(spawn)": {"median_us": 200.0, "p90_us": 250.0},
                "ray": {"skipped": "ray not installed"},
            },
            "pinned": {
                "floor": {"median_us": 20.0, "p90_us": 25.0},
                "clustercore": {"median_us": 50.0, "p90_us": 60.0},
                "mp.Pool": {"median_us": 40.0, "p90_us": 45.0},
            },
        },
        "throughput": {
            "clustercore": {
                "batch_size=auto": {"tasks_per_s": 2e6},
                "batch_size=1": {"tasks_per_s": 3e4},
            },
            "mp.Pool": {
                "chunksize=1": {"tasks_per_s": 4e4},
                "chunksize=1000": {"tasks_per_s": 1e6},
            },
        },
        "bandwidth": {
            "floor (reused buffer)": {"gbps": 2.0, "bytes": 1 << 20},
            "floor (fresh buffer)": {"gbps": 0.8, "bytes": 1 << 20},
            "clustercore": {"gbps": 1.2, "bytes": 1 << 20},
        },
        "startup": {
            "clustercore": {"seconds": 0.5, "workers": 4},
            "PPE(spawn)": {"seconds": 0.25, "workers": 4},
        },
        "leftover_processes": [],
    }


def test_target_verdicts() -> None:
    verdicts = dict(report.targets(_fake_results()))
    assert verdicts["latency unpinned: clustercore <= 2x floor"].startswith("met (1.80x")
    assert verdicts["latency unpinned: clustercore below every peer"].startswith("met")
    assert verdicts["latency pinned: clustercore <= 2x floor"].startswith("NOT met (2.50x")
    assert verdicts["latency pinned: clustercore below every peer"].startswith("NOT met")
    assert verdicts["bandwidth: clustercore >= 50% of raw socket (reused buffer)"].startswith("met (0.60x")
    assert verdicts["start-up (warm fork server): clustercore faster than PPE(spawn)"].startswith("NOT met (2.00x")
    auto = "throughput: pmap(batch_size='auto') >= best of Pool/PPE/loky"
    assert verdicts[auto].startswith("met (2.00x vs mp.Pool chunksize=1000")
    assert verdicts["throughput: pmap(batch_size=1) > Pool.map(chunksize=1)"].startswith("NOT met")


def test_render_shows_ratios_and_skips() -> None:
    text = report.render(_fake_results(), tasks=20000)
    assert "1.80x" in text  # clustercore latency / floor
    assert "0.60x" in text  # clustercore GB/s / raw reused
    assert "1.50x" in text  # clustercore GB/s / raw fresh
    assert "skipped: ray not installed" in text
    assert "leftover processes: none" in text


def test_round_spread_line() -> None:
    text = report.render(_fake_results())
    line = next(ln for ln in text.splitlines() if "unpinned, clustercore / peer per round" in ln)
    assert line.endswith("floor 1.80..2.50x, mp.Pool 0.30..0.50x")  # PPE(spawn) has no rounds
    assert "   pinned, clustercore / peer per round" not in text  # the pinned half has none either


def test_round_order_varies_first_and_neighbours() -> None:
    items = ["a", "b", "c"]
    orders = [tuple(round_order(items, r)) for r in range(6)]
    assert len(set(orders)) == 6  # every permutation of three, once
    assert {tuple(round_order(["x", "y"], r)) for r in range(4)} == {("x", "y"), ("y", "x")}
    assert round_order([], 3) == []
