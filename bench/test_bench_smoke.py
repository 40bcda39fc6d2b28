"""Smoke test of the benchmark suite: it runs, prints its tables, leaks nothing.

No timing is asserted: these machines are shared and noisy. The fast tests
below check the ratio arithmetic on made-up figures, and that the split
placement's helper really moves a process tree onto another CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import placement, report
from bench.config import QUICK, QUICK_HANG_S
from bench.rounds import round_order

ROOT = Path(__file__).resolve().parent.parent
TWO_CPUS = placement.split_cpus() is not None


pytestmark = pytest.mark.timeout(QUICK_HANG_S + 60)  # the first test to use quick_run waits for it


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One ``--quick`` run shared by the tests below: its output and its JSON."""
    out_json = tmp_path_factory.mktemp("quick") / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out_json)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=QUICK_HANG_S + 30,  # its own hang dump comes first
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
    if TWO_CPUS:
        for name in ("floor", "clustercore"):
            assert results["latency"]["split"][name]["median_us"] > 0, results["latency"]["split"]
        assert "split = driver on CPU" in proc.stdout, detail
    else:
        assert "split" not in results["latency"] and results["latency"]["split_skipped"]
        assert "split: skipped" in proc.stdout, detail
    assert results["bandwidth"]["floor (fresh buffer)"]["gbps"] > 0


def test_quick_run_has_the_minimal_rpc_and_what_scripts_send(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    proc, results = quick_run
    assert "minimal Python RPC (reference)" in proc.stdout
    cells = results["latency"]["unpinned"]
    for row in ("minimal RPC", "clustercore __main__ function", "clustercore lambda", "clustercore closure"):
        assert cells[row]["median_us"] > 0, (row, cells.get(row))
    assert cells["clustercore 10-field dataclass arg"]["median_us"] > 0
    assert "clustercore / minimal RPC per round" in proc.stdout


def test_quick_run_keeps_round_medians(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, results = quick_run
    for half in ("unpinned", "pinned", "split") if TWO_CPUS else ("unpinned", "pinned"):
        for name in ("clustercore", "floor"):
            cell = results["latency"][half][name]
            assert len(cell["round_medians_us"]) == QUICK.latency_rounds, (half, name, cell)
            assert all(m > 0 for m in cell["round_medians_us"]), (half, name, cell)
    assert "unpinned, clustercore / peer per round" in proc.stdout


def test_quick_run_keeps_throughput_rounds(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    proc, results = quick_run
    variants = [("clustercore", "batch_size=auto"), ("clustercore", "batch_size=1"), ("mp.Pool", "chunksize=1")]
    for name, label in variants:
        cell = results["throughput"][name][label]
        assert len(cell["round_tasks_per_s"]) == QUICK.throughput_rounds == cell["repeats"], (name, label, cell)
        assert all(r > 0 for r in cell["round_tasks_per_s"]), (name, label, cell)
    line = next(ln for ln in proc.stdout.splitlines() if "clustercore / peer per round (rates" in ln)
    assert "batch_size=auto / " in line and "batch_size=1 / mp.Pool chunksize=1 " in line, line


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
            "split": {
                "floor": {"median_us": 64.0, "p90_us": 70.0, "round_medians_us": [60.0, 64.0]},
                "clustercore": {"median_us": 96.0, "p90_us": 99.0, "round_medians_us": [90.0, 96.0]},
                "mp.Pool": {"median_us": 120.0, "p90_us": 130.0, "round_medians_us": [100.0, 120.0]},
            },
            "split_how": "driver on CPU 0, workers on CPU 1 (every thread, os.sched_setaffinity)",
        },
        "throughput": {
            "clustercore": {
                "batch_size=auto": {"tasks_per_s": 2e6, "round_tasks_per_s": [2e6, 1.5e6, 2.2e6]},
                "batch_size=1": {"tasks_per_s": 3e4, "round_tasks_per_s": [3e4, 2e4, 4e4]},
            },
            "mp.Pool": {
                "chunksize=1": {"tasks_per_s": 4e4, "round_tasks_per_s": [4e4, 5e4, 4e4]},
                "chunksize=1000": {"tasks_per_s": 1e6, "round_tasks_per_s": [1e6, 1.25e6, 0.8e6]},
            },
            "PPE(spawn)": {
                "chunksize=1000": {"tasks_per_s": 9e5, "round_tasks_per_s": [9e5, 5e6, 9e5]},
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
    assert verdicts["latency split: clustercore <= 2x floor"].startswith("met (1.50x")
    assert verdicts["latency split: clustercore below every peer"].startswith("met (96.0 us vs mp.Pool 120 us")
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
    line = next(ln for ln in text.splitlines() if "split, clustercore / peer per round" in ln)
    assert line.endswith("floor 1.50..1.50x, mp.Pool 0.80..0.90x")


def test_throughput_round_spread_line() -> None:
    results = _fake_results()
    text = report.render(results)
    line = next(ln for ln in text.splitlines() if "clustercore / peer per round (rates" in ln)
    # the best peer variant by pooled median (mp.Pool chunksize=1000), not PPE(spawn)'s one fast round
    auto = "batch_size=auto / mp.Pool chunksize=1000 1.20..2.75x"
    assert line.endswith(f"{auto}, batch_size=1 / mp.Pool chunksize=1 0.40..1.00x")
    del results["throughput"]["mp.Pool"]["chunksize=1"]["round_tasks_per_s"]
    line = next(ln for ln in report.render(results).splitlines() if "clustercore / peer per round (rates" in ln)
    assert line.endswith(auto)
    del results["throughput"]["clustercore"]["batch_size=auto"]["round_tasks_per_s"]
    assert "clustercore / peer per round (rates" not in report.render(results)


def test_split_columns_and_skip_note() -> None:
    results = _fake_results()
    text = report.render(results)
    header = next(ln for ln in text.splitlines() if ln.startswith("peer "))
    assert header.split()[1:] == [w for h in report.HALVES for w in (h, "median", "p90", "x", "floor", "x", "rpc")]
    assert "   split = driver on CPU 0, workers on CPU 1" in text
    del results["latency"]["split"], results["latency"]["split_how"]
    results["latency"]["split_skipped"] = "needs 2 CPUs, only [0] allowed"
    text = report.render(results)
    assert "   split: skipped (needs 2 CPUs, only [0] allowed)" in text
    assert "split median" not in text
    assert "latency split" not in text


@pytest.mark.skipif(not TWO_CPUS, reason="needs 2 allowed CPUs")
def test_move_descendants_moves_every_thread_of_every_descendant() -> None:
    """A child with a second thread, and its own child: all of them end up on CPU B."""
    _, b = placement.split_cpus() or (0, 0)
    script = (
        "import subprocess, sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print(g.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    grandchild = None
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        assert os.sched_getaffinity(grandchild) != {b}  # inherited from us: every allowed CPU
        assert placement.move_descendants(b) >= 3  # the child's two threads, the grandchild
        for pid in (child.pid, grandchild):
            tids = placement.threads(pid)
            assert tids, pid
            assert {t: os.sched_getaffinity(t) for t in tids} == {t: {b} for t in tids}
        assert len(placement.threads(child.pid)) >= 2  # the sleeping thread was moved too
        assert grandchild in placement.descendants(os.getpid())
    finally:
        if grandchild is not None:
            os.kill(grandchild, signal.SIGKILL)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def test_round_order_varies_first_and_neighbours() -> None:
    items = ["a", "b", "c"]
    orders = [tuple(round_order(items, r)) for r in range(6)]
    assert len(set(orders)) == 6  # every permutation of three, once
    assert {tuple(round_order(["x", "y"], r)) for r in range(4)} == {("x", "y"), ("y", "x")}
    assert round_order([], 3) == []


def test_quick_hosts_section_runs_or_says_in_one_line_why_not(tmp_path: Path) -> None:
    """``--quick --only hosts`` (issue 15 between hosts): its table where it can run (root;
    it starts the namespace hosts if they are down), else one line saying why not; under
    ``CI`` as root (``make test`` starts the services first) it must run."""
    out_json = tmp_path / "hosts.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "hosts", "--json", str(out_json)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=QUICK_HANG_S,
        check=False,
    )
    detail = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, detail
    assert "leftover processes: none" in proc.stdout, detail
    section = json.loads(out_json.read_text())["hosts"]
    if "skipped" in section:
        assert not (os.environ.get("CI") and os.geteuid() == 0), detail
        assert "\n" not in section["skipped"] and f"skipped: {section['skipped']}" in proc.stdout, detail
        return
    for kind in ("plain", "TLS"):
        for path in ("driver → worker", "worker → driver", "worker → worker"):
            assert section[kind][path]["clustercore_gbps"] > 0 and section[kind][path]["floor_gbps"] > 0, section
    assert "TLSv1.3" in section["tls_cipher"], section


def test_hosts_table_and_skip_line() -> None:
    from bench import hosts

    assert hosts.render({"skipped": "needs root"}).splitlines()[-1] == "skipped: needs root"
    cell = {"floor_gbps": 1.0, "clustercore_gbps": 0.9, "ratio": 0.9, "pair_ratio_range": [0.8, 1.1]}
    result = {
        "mib": 100,
        "turns": 2,
        "samples_per_cell": 8,
        "hosts": ["ccnode1", "ccnode2"],
        "tls_cipher": "TLSv1.3 TLS_AES_256_GCM_SHA384",
        **{kind: dict.fromkeys(hosts.PATHS, cell) for kind in hosts.KINDS},
    }
    text = hosts.render(result)
    assert "| worker → worker | TLS | 1.00 | 0.90 | 0.90x | 0.80..1.10x |" in text
    assert "TLS_AES_256_GCM_SHA384" in text
