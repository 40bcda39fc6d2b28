"""Start-up through Slurm: ``addprocs("slurm", ntasks=N)`` beside the floor Slurm itself sets.

``python -m bench.slurm_startup [--ntasks 8] [--repeat 5] [--quick] [--json PATH]``

Each repetition measures, back to back in this one run:

* ``srun -n N python -c pass``: an allocation, N tasks of this interpreter,
  the job's end: the floor for any launcher built on srun;
* ``srun -n N true``: the same without Python, Slurm's own share;
* ``srun -n N python -c "import clustercore.engine.worker"``: the floor plus the
  import every worker pays before it can listen;
* ``addprocs("slurm", ntasks=N)``: from the call until N workers are ready
  (connected and joined), then, separately, ``rmprocs`` until the job has
  left the queue.

Slurm must be reachable (``SLURM_CONF`` set, e.g. by ``make services`` as
root, then ``set -a; . /tmp/clustercore-services/env``). No timing is
asserted; the ratios are the figures to read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable

from bench.stats import median, ratio

SRUN_TIMEOUT = 120.0


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _srun(ntasks: int, *command: str) -> None:
    subprocess.run(
        ["srun", f"--ntasks={ntasks}", "--job-name=bench-floor", *command],
        check=True,
        timeout=SRUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def _queue_empty() -> bool:
    out = subprocess.run(["squeue", "--noheader"], capture_output=True, text=True, timeout=30, check=True).stdout
    return not out.strip()


def measure(ntasks: int, repeat: int) -> dict[str, list[float]]:
    import clustercore as cc

    samples: dict[str, list[float]] = {
        "srun python -c pass": [],
        "srun true": [],
        "srun import": [],
        "addprocs": [],
        "rmprocs": [],
    }
    for i in range(repeat):
        samples["srun python -c pass"].append(_timed(lambda: _srun(ntasks, sys.executable, "-c", "pass")))
        samples["srun true"].append(_timed(lambda: _srun(ntasks, "true")))
        samples["srun import"].append(
            _timed(lambda: _srun(ntasks, sys.executable, "-c", "import clustercore.engine.worker"))
        )
        start = time.perf_counter()
        pids = cc.addprocs("slurm", ntasks=ntasks, progress=False)
        samples["addprocs"].append(time.perf_counter() - start)
        if len(pids) != ntasks:
            raise RuntimeError(f"addprocs gave {len(pids)} workers, not {ntasks}")
        start = time.perf_counter()
        cc.rmprocs(pids)
        samples["rmprocs"].append(time.perf_counter() - start)
        if not _queue_empty():
            raise RuntimeError("a job is still in the queue after rmprocs")
        print(f"  repetition {i + 1}/{repeat} done", file=sys.stderr, flush=True)
    return samples


def report(ntasks: int, samples: dict[str, list[float]]) -> str:
    floor = median(samples["srun python -c pass"])
    rows = [f"== slurm start-up: {ntasks} tasks, median of {len(samples['addprocs'])} (s; ratio to the floor)"]
    for name, label in (
        ("srun python -c pass", f"srun -n {ntasks} python -c pass (floor)"),
        ("srun true", f"srun -n {ntasks} true"),
        ("srun import", f"srun -n {ntasks} python -c 'import clustercore.engine.worker'"),
        ("addprocs", f"addprocs('slurm', ntasks={ntasks}) until ready"),
        ("rmprocs", "rmprocs until the job left the queue"),
    ):
        value = median(samples[name])
        shown = ratio(value, floor)
        rows.append(f"  {label:<52} {value:7.3f} s" + (f"  {shown:5.2f}x" if shown is not None else ""))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.slurm_startup", description=__doc__.splitlines()[0])
    p.add_argument("--ntasks", type=int, default=8)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="one repetition: a smoke test, not a measurement")
    p.add_argument("--json", metavar="PATH", help="also write the samples as JSON")
    args = p.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    samples = measure(args.ntasks, repeat)
    print(report(args.ntasks, samples))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ntasks": args.ntasks, "samples": samples}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
