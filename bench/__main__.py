"""Command line: ``python -m bench [--quick] [--only ...] [--peers ...] [--no-pinned] [--no-split] [--json out.json]``.

With latency selected, the parent also re-runs latency in child processes,
one per placement (pinned, split; see :mod:`bench.placement`), and adds
their halves to its results.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = str(Path(__file__).resolve().parent.parent)


def _export_repo_root() -> None:
    """Let every worker process, of every peer, import ``bench.tasks``."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if REPO_ROOT not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *parts])


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from bench.config import MEASUREMENTS, NOT_QUICK
    from bench.placement import PLACEMENTS

    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark clustercore against its peers; prints ratios measured in one run.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, one repetition: a smoke test, not a measurement",
    )
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of {','.join(MEASUREMENTS)} (default: all; --quick leaves out large, hosts)",
    )
    p.add_argument(
        "--peers",
        default="",
        help="comma-separated peer names to run (default: all), e.g. clustercore,loky",
    )
    p.add_argument(
        "--no-pinned",
        action="store_true",
        help="skip both placed latency child runs (pinned and split): unpinned latency only",
    )
    p.add_argument(
        "--no-split",
        action="store_true",
        help="skip the split latency child run (driver on one CPU, workers on another)",
    )
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    p.add_argument("--_latency-child", dest="latency_child", help=argparse.SUPPRESS)
    p.add_argument("--_placement", dest="placement", choices=PLACEMENTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.only is None:  # a smoke test of 8 workers, 1 GiB echoes or namespace hosts would not be quick
        args.only = ",".join(m for m in MEASUREMENTS if not (args.quick and m in NOT_QUICK))
    only = tuple(m.strip() for m in args.only.split(",") if m.strip())
    bad = [m for m in only if m not in MEASUREMENTS]
    if bad:
        p.error(f"unknown measurement(s) {bad}; choose from {MEASUREMENTS}")
    args.only = tuple(m for m in MEASUREMENTS if m in only)
    args.peers = [n.strip() for n in args.peers.split(",") if n.strip()]
    return args


def _placed_halves(args: argparse.Namespace) -> list[str]:
    """The placements to re-run latency with, as child runs."""
    if "latency" not in args.only or args.no_pinned:
        return []
    return ["pinned"] if args.no_split else ["pinned", "split"]


def _run_placed(results: dict[str, Any], name: str, args: argparse.Namespace) -> None:
    """Latency again in a child run placed as ``name``; a failure is an error, a skip a note."""
    from bench import placement
    from bench.runner import log

    reason = placement.skip_reason(name)
    if reason:
        log(f"latency {name}: skipped ({reason})")
        results["latency"][f"{name}_skipped"] = reason
        return
    log(f"latency again, {name} (child run)")
    try:
        child = placement.run_child(name, args.quick, args.peers, timeout=180 if args.quick else 1800)
    except Exception as e:  # noqa: BLE001 - reported, the rest of the run stands
        results["errors"].append(f"{name} latency run: {type(e).__name__}: {e}")
        results["latency"][name] = {"floor": {"error": f"{name} run failed"}}
    else:
        placement.add_half(results, name, child)


def _run_section(results: dict[str, Any], key: str, module: str, what: str, sizes: Any, quick: bool) -> None:
    """``results[key]``: what ``bench.<module>.run`` measures on its own (:mod:`bench.tls`,
    TLS against plain TCP links; :mod:`bench.largearrays`, large arrays on one host;
    :mod:`bench.hosts`, one array between namespace hosts)."""
    import importlib

    from bench.runner import log

    log(f"{key}: {what}")
    try:
        results[key] = importlib.import_module(f"bench.{module}").run(sizes, quick)
    except Exception as e:  # noqa: BLE001 - reported, the rest of the run stands
        results["errors"].append(f"{key}: {type(e).__name__}: {e}")


def main(argv: list[str] | None = None) -> int:
    _export_repo_root()
    args = _parse(argv)

    from bench import placement, procs, report
    from bench.config import FULL, QUICK, QUICK_HANG_S
    from bench.peers import all_peers
    from bench.runner import Runner

    split = placement.apply_in_child(args.placement) if args.placement else None
    sizes = QUICK if args.quick else FULL
    if args.quick:  # a hung smoke test dumps every thread's stack instead of eating CI's budget
        faulthandler.dump_traceback_later(QUICK_HANG_S, exit=True)
    peers = all_peers()
    if args.peers:
        wanted = {n.lower() for n in args.peers}
        unknown = wanted - {p.name.lower() for p in peers}
        if unknown:
            print(
                f"unknown peer(s) {sorted(unknown)}; known: {[p.name for p in peers]}",
                file=sys.stderr,
            )
            return 2
        peers = [p for p in peers if p.name.lower() in wanted]

    results = Runner(sizes, args.only, peers, args.quick, settle=split.settle if split else None).run()

    if args.latency_child:  # a placed half, re-executed by bench.placement
        results["leftover_processes"] = procs.leftover_children()
        with open(args.latency_child, "w") as f:
            json.dump(results, f)
        return 0

    for name in _placed_halves(args):
        _run_placed(results, name, args)
    if "tls" in args.only:
        _run_section(results, "tls", "tls", "plain and TLS links, alternating", sizes, args.quick)
    if "large" in args.only:
        _run_section(results, "large", "largearrays", "echoes and one array to many workers", sizes, args.quick)
    if "hosts" in args.only:
        _run_section(results, "hosts", "hosts", "one array between namespace hosts over SSH", sizes, args.quick)

    left = procs.leftover_children() + results.pop("child_leftovers", [])
    results["leftover_processes"] = left

    print(report.render(results, tasks=sizes.tasks if "throughput" in args.only else None))
    if results.get("tls"):
        from bench import tls

        print("\n" + tls.render(results["tls"]))
    if results.get("large"):
        from bench import largearrays

        print("\n" + largearrays.render(results["large"]))
    if results.get("hosts"):
        from bench import hosts

        print("\n" + hosts.render(results["hosts"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if results["errors"] or left else 0


if __name__ == "__main__":
    sys.exit(main())
