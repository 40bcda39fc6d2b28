"""Problem sizes and repetition counts for a full run and for ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class Sizes:
    workers: int = 2  # workers for latency, throughput, bandwidth
    latency_warmup: int = 200
    latency_calls: int = 2000
    latency_budget_s: float = 5.0  # a slow peer samples for this long at most, over all rounds
    latency_rounds: int = 10  # latency and floor samples are split into this many interleaved rounds
    latency_min_per_round: int = 5  # samples a peer takes in a round even past its budget
    floor_pingpongs: int = 10000
    tasks: int = 20_000  # throughput: number of x + 1 tasks
    throughput_rounds: int = 7  # interleaved rounds of throughput
    throughput_maps_per_round: int = 5  # back-to-back maps of each variant in each round
    throughput_budget_s: float = 5.0  # a variant slower than this over all rounds maps fewer tasks each round
    bandwidth_bytes: int = 100 * MIB
    bandwidth_warmup: int = 1
    bandwidth_repeats: int = 5
    startup_workers: int = 4
    startup_repeats: int = 3


FULL = Sizes()

QUICK = Sizes(
    latency_warmup=5,
    latency_calls=30,
    latency_rounds=2,
    floor_pingpongs=200,
    tasks=2000,
    throughput_rounds=2,
    throughput_maps_per_round=1,
    bandwidth_bytes=4 * MIB,
    bandwidth_warmup=0,
    bandwidth_repeats=1,
    startup_repeats=1,
)

# tls: clustercore alone, see bench.tls; large: issue 15's rows, see bench.largearrays;
# hosts: issue 15 between namespace hosts (root), see bench.hosts
QUICK_HANG_S = 240  # --quick takes 60-90 s on a quiet 2-core VM, more while other work shares it

MEASUREMENTS = ("latency", "throughput", "bandwidth", "startup", "tls", "large", "hosts")
NOT_QUICK = ("large", "hosts")  # --quick leaves these out unless named
