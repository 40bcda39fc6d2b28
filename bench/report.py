"""Turns a results dict into tables of figures and ratios, and a target check.

Ratios direction: for times (latency, start-up) a ratio is ``time / reference``,
lower is better; for rates (throughput, bandwidth) it is ``rate / reference``,
higher is better. The reference is named in each table's title.

Latency has up to three placements, three columns each (median, p90,
x floor): ``unpinned`` and the child runs ``pinned`` and ``split`` (see
:mod:`bench.placement`), stored as ``results["latency"][placement]``; one
that could not run here is ``results["latency"][placement + "_skipped"]``,
printed as a note.

Latency and throughput are sampled in interleaved rounds (see
:mod:`bench.rounds`); a line under each of their tables gives the lowest and
highest ratio of clustercore to a peer taken within one round.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bench.stats import ratio

CC = "clustercore"
RPC = "minimal RPC"  # bench.runner.RPC: the reference row of the latency table
HALVES = ("unpinned", "pinned", "split")
PLACED_AS = {"pinned": "driver and workers on one CPU via {how}", "split": "{how}"}
# the peers of issue 3's throughput target
THROUGHPUT_PEERS = ("mp.Pool", "PPE(spawn)", "PPE(fork)", "loky")


def _num(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def _x(r: float | None) -> str:
    if r is None:
        return "-"
    if r < 0.01:
        return f"{r:.4f}x"
    if r < 0.1:
        return f"{r:.3f}x"
    return f"{r:.2f}x"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Aligned columns. In a row shorter than the header, the last cell is a
    note that runs on across the remaining columns."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in header]
    for r in rows:
        aligned = r if len(r) == len(header) else r[:-1]
        widths = [max(w, len(c)) for w, c in zip(widths, [*aligned, *[""] * len(widths)], strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths, strict=False))
        )

    lines = [line(header).rstrip(), "  ".join("-" * w for w in widths).rstrip()]
    for r in rows:
        if len(r) == len(header):
            lines.append(line(r).rstrip())
        else:
            lines.append((line(r[:-1]) + "  " + r[-1]).rstrip())
    return lines


def _note(cell: dict[str, Any] | None) -> str | None:
    if cell is None:
        return "not run"
    if "skipped" in cell:
        return "skipped: " + cell["skipped"]
    if "error" in cell:
        return "ERROR: " + cell["error"]
    return None


def _get(cell: dict[str, Any] | None, key: str) -> float | None:
    if not cell or key not in cell:
        return None
    return float(cell[key])


# -- sections -----------------------------------------------------------------


def _meta(results: dict[str, Any]) -> list[str]:
    m = results["meta"]
    mode = "QUICK (smoke test, sizes too small to judge)" if m["quick"] else "full"
    lines = [
        f"clustercore benchmark: python {m['python']}, {m['cpu_count']} CPUs, affinity {m['affinity']}, {mode} run",
        "peers:",
    ]
    width = max((len(n) for n in results["peers"]), default=4)
    for name, info in results["peers"].items():
        status = "skipped: " + info["skipped"] if "skipped" in info else "ok " + info.get("version", "")
        lines.append(f"  {name.ljust(width)}  {status.strip()}  [{info.get('description', '')}]")
    return lines


def _latency_rows(lat: dict[str, Any], names: list[str]) -> list[str]:
    """floor, the minimal RPC, then each peer followed by its variant rows (``"<peer> <label>"``)."""
    keys: list[str] = []
    for half in HALVES:
        for key in lat.get(half, {}) if isinstance(lat.get(half), dict) else ():
            if key not in keys:
                keys.append(key)
    rows = ["floor", RPC]
    for name in names:
        rows.append(name)
        rows += [k for k in keys if k.startswith(name + " ") and k not in names]
    return rows


def _latency(results: dict[str, Any], names: list[str]) -> list[str]:
    lat = results["latency"]
    halves = [(h, lat.get(h, {})) for h in HALVES if h == "unpinned" or h in lat]
    header = ["peer"]
    for label, _ in halves:
        header += [f"{label} median", "p90", "x floor", "x rpc"]
    rows = []
    for name in _latency_rows(lat, names):
        label = {"floor": "raw TCP ping-pong (floor)", RPC: "minimal Python RPC (reference)"}.get(name, name)
        row = [label]
        notes = []
        for _, half in halves:
            if "error" in half and name == "floor":
                notes.append("ERROR: " + half["error"])
            cell = half.get(name)
            note = _note(cell)
            if note:
                row += ["-", "-", "-", "-"]
                notes.append(note)
                continue
            floor = _get(half.get("floor"), "median_us")
            reference = _get(half.get(RPC), "median_us")
            med = _get(cell, "median_us")
            row += [_num(med, 1), _num(_get(cell, "p90_us"), 1), _x(ratio(med, floor)), _x(ratio(med, reference))]
        if notes and all(c == "-" for c in row[1:]):
            row = [row[0], notes[0]]
        rows.append(row)
    title = (
        "== latency: no-op call round trip, median and p90 in us (x floor = median / ping-pong median; "
        "x rpc = median / minimal Python RPC median; lower is better)"
    )
    lines = [title, *_placement_notes(lat), *_table(header, rows)]
    for label, half in halves:
        spread = _round_spread(half, [RPC, *names])
        if spread:
            lines.append(f"   {label}, clustercore / peer per round (medians of the same round), min..max: {spread}")
        reference = (half.get(RPC) or {}).get("round_medians_us")
        ours = [
            f"{row.removeprefix(CC).strip() or 'importable'} {spread}"
            for row in _latency_rows(lat, names)
            if row.startswith(CC) and (spread := _min_max((half.get(row) or {}).get("round_medians_us"), reference))
        ]
        if ours:
            lines.append(f"   {label}, clustercore / minimal RPC per round, min..max: {', '.join(ours)}")
    return lines


def _placement_notes(lat: dict[str, Any]) -> list[str]:
    """One line per placed half: how it was placed, or why it was skipped."""
    lines = []
    for half, text in PLACED_AS.items():
        if lat.get(f"{half}_how"):
            lines.append(f"   {half} = " + text.format(how=lat[f"{half}_how"]))
        if lat.get(f"{half}_skipped"):
            lines.append(f"   {half}: skipped ({lat[f'{half}_skipped']})")
    return lines


def _round_spread(half: dict[str, Any], names: list[str]) -> str:
    """``floor 1.10..1.32x, mp.Pool 0.91..1.04x, ...``: clustercore's median over
    each peer's in the same round, lowest and highest; empty if not recorded."""
    cc = (half.get(CC) or {}).get("round_medians_us")
    if not cc:
        return ""
    parts = []
    for name in ["floor", *names]:
        theirs = (half.get(name) or {}).get("round_medians_us") if name != CC else None
        spread = _min_max(cc, theirs)
        if spread:
            parts.append(f"{name} {spread}")
    return ", ".join(parts)


def best_variant(cell: dict[str, Any] | None) -> tuple[str, float] | None:
    if not cell or _note(cell):
        return None
    best = None
    for label, v in cell.items():
        if isinstance(v, dict) and "tasks_per_s" in v and (best is None or v["tasks_per_s"] > best[1]):
            best = (label, float(v["tasks_per_s"]))
    return best


def best_peer(results: dict[str, Any], among: Iterable[str] | None = None) -> tuple[str, str, float] | None:
    best = None
    for name, cell in results.get("throughput", {}).items():
        if name == CC or (among is not None and name not in among):
            continue
        b = best_variant(cell)
        if b and (best is None or b[1] > best[2]):
            best = (name, b[0], b[1])
    return best


def _throughput(results: dict[str, Any], names: list[str], tasks: int | None) -> list[str]:
    thr = results["throughput"]
    best = best_peer(results)
    ref = best[2] if best else None
    rows = []
    for name in names:
        cell = thr.get(name)
        note = _note(cell)
        if note:
            rows.append([name, note])
            continue
        assert cell is not None
        for label, v in cell.items():
            if "skipped" in v:
                rows.append([name, label, "skipped: " + v["skipped"]])
            else:
                n = v.get("tasks")
                fewer = f"(on {n:,} tasks)" if n and tasks and n != tasks else ""
                rows.append([name, label, _num(v["tasks_per_s"]), _x(ratio(v["tasks_per_s"], ref)), fewer])
    title = (
        f"== throughput: {tasks or 0:,} tasks of x + 1 (tasks/s; x best = tasks/s / best peer's "
        f"best variant; higher is better)"
    )
    lines = [title]
    if best:
        lines.append(
            f"   best peer: {best[0]} {best[1]} at {_num(best[2])} tasks/s"
            "   (auto* = Pool.map's heuristic len/(4*workers) for peers without one)"
        )
    lines += _table(["peer", "variant", "tasks/s", "x best", ""], rows)
    spread = _throughput_spread(thr, best)
    if spread:
        lines.append(f"   clustercore / peer per round (rates of the same round), min..max: {spread}")
    return lines


def _min_max(ours: Sequence[float] | None, theirs: Sequence[float] | None) -> str | None:
    """``0.91..1.04x``: the lowest and highest of ``ours[i] / theirs[i]``; None without pairs."""
    rs = [a / b for a, b in zip(ours or [], theirs or [], strict=False) if b]
    return f"{_x(min(rs)).removesuffix('x')}..{_x(max(rs))}" if rs else None


def _throughput_spread(thr: dict[str, Any], best: tuple[str, str, float] | None) -> str:
    """``batch_size=auto / mp.Pool chunksize=auto 1.10..1.30x, batch_size=1 / mp.Pool
    chunksize=1 0.90..1.10x``: clustercore's rate over a peer variant's in the same
    round, lowest and highest; empty if no rounds were recorded."""

    def rounds(name: str, label: str) -> list[float] | None:
        return ((thr.get(name) or {}).get(label) or {}).get("round_tasks_per_s")

    pairs = [("batch_size=1", "mp.Pool", "chunksize=1")]
    if best:
        pairs.insert(0, ("batch_size=auto", best[0], best[1]))
    parts = []
    for ours, name, label in pairs:
        spread = _min_max(rounds(CC, ours), rounds(name, label))
        if spread:
            parts.append(f"{ours} / {name} {label} {spread}")
    return ", ".join(parts)


def _bandwidth(results: dict[str, Any], names: list[str]) -> list[str]:
    bw = results["bandwidth"]
    reused = _get(bw.get("floor (reused buffer)"), "gbps")
    fresh = _get(bw.get("floor (fresh buffer)"), "gbps")
    rows = []
    size = None
    for name in ["floor (reused buffer)", "floor (fresh buffer)", *names]:
        cell = bw.get(name)
        note = _note(cell)
        label = "raw socket " + name if name.startswith("floor") else name
        if note:
            rows.append([label, note])
            continue
        size = size or _get(cell, "bytes")
        g = _get(cell, "gbps")
        rows.append([label, _num(g), _x(ratio(g, reused)), _x(ratio(g, fresh))])
    mib = f"{size / (1 << 20):.0f} MiB" if size else "?"
    title = (
        f"== bandwidth: a {mib} numpy array to a worker and back (GB/s = 2 x size / round trip; "
        "x raw = GB/s / raw socket echo; higher is better)"
    )
    return [title, *_table(["peer", "GB/s", "x raw reused", "x raw fresh"], rows)]


def _startup(results: dict[str, Any], names: list[str]) -> list[str]:
    st = results["startup"]
    ref = _get(st.get("PPE(spawn)"), "seconds")
    rows = []
    workers = None
    for name in names:
        cell = st.get(name)
        note = _note(cell)
        if note:
            rows.append([name, note])
            continue
        workers = workers or cell.get("workers")  # type: ignore[union-attr]
        s = _get(cell, "seconds")
        rows.append([name, _num(s, 3), _x(ratio(s, ref))])
    title = (
        f"== start-up: {workers or '?'} workers until the first call returns (seconds; "
        "x PPE(spawn) = seconds / ProcessPoolExecutor(spawn); lower is better)"
    )
    return [title, *_table(["peer", "seconds", "x PPE(spawn)"], rows)]


# -- targets (issues 2 and 3); printed, never asserted -------------------------


def targets(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(goal, verdict) pairs for clustercore's speed targets."""
    out: list[tuple[str, str]] = []

    def verdict(ok: bool | None, detail: str) -> str:
        if ok is None:
            return "n/a (" + detail + ")"
        return ("met" if ok else "NOT met") + f" ({detail})"

    lat = results.get("latency", {})
    for half in HALVES:
        cells = lat.get(half)
        if cells is None:
            continue
        cc = _get(cells.get(CC), "median_us")
        fl = _get(cells.get("floor"), "median_us")
        r = ratio(cc, fl)
        out.append(
            (
                f"latency {half}: clustercore <= 2x floor",
                verdict(None if r is None else r <= 2, f"{_x(r)}"),
            )
        )
        reference = _get(cells.get(RPC), "median_us")
        for row, what in ((CC, "importable function"), (f"{CC} __main__ function", "__main__ function")):
            r = ratio(_get(cells.get(row), "median_us"), reference)
            out.append(
                (
                    f"latency {half}: clustercore ({what}) <= 1.5x minimal RPC",
                    verdict(None if r is None else r <= 1.5, _x(r)),
                )
            )
        peers: dict[str, float] = {}
        for n, c in cells.items():
            v = _get(c, "median_us") if n not in (CC, "floor", RPC) and not n.startswith(CC + " ") else None
            if v is not None:
                peers[n] = v
        if cc is None or not peers:
            out.append((f"latency {half}: clustercore below every peer", verdict(None, "no data")))
        else:
            fastest = min(peers, key=lambda n: peers[n])
            out.append(
                (
                    f"latency {half}: clustercore below every peer",
                    verdict(
                        cc < peers[fastest],
                        f"{_num(cc, 1)} us vs {fastest} {_num(peers[fastest], 1)} us",
                    ),
                )
            )
    bw = results.get("bandwidth")
    if bw is not None:
        r = ratio(_get(bw.get(CC), "gbps"), _get(bw.get("floor (reused buffer)"), "gbps"))
        out.append(
            (
                "bandwidth: clustercore >= 50% of raw socket (reused buffer)",
                verdict(None if r is None else r >= 0.5, _x(r)),
            )
        )
    st = results.get("startup")
    if st is not None:
        ppe = _get(st.get("PPE(spawn)"), "seconds")
        for name, label in ((CC, "warm fork server"), ("clustercore (cold)", "a driver's first addprocs")):
            r = ratio(_get(st.get(name), "seconds"), ppe)
            out.append(
                (
                    f"start-up ({label}): clustercore faster than PPE(spawn)",
                    verdict(None if r is None else r < 1, _x(r)),
                )
            )
    thr = results.get("throughput")
    if thr is not None:
        cc_cell = thr.get(CC) or {}
        auto = _get(cc_cell.get("batch_size=auto"), "tasks_per_s")
        one = _get(cc_cell.get("batch_size=1"), "tasks_per_s")
        best = best_peer(results, THROUGHPUT_PEERS)
        r = ratio(auto, best[2] if best else None)
        out.append(
            (
                "throughput: pmap(batch_size='auto') >= best of Pool/PPE/loky",
                verdict(
                    None if r is None else r >= 1,
                    _x(r) + (f" vs {best[0]} {best[1]}" if best else ""),
                ),
            )
        )
        pool1 = _get((thr.get("mp.Pool") or {}).get("chunksize=1"), "tasks_per_s")
        r = ratio(one, pool1)
        out.append(
            (
                "throughput: pmap(batch_size=1) > Pool.map(chunksize=1)",
                verdict(None if r is None else r > 1, _x(r)),
            )
        )
    return out


def render(results: dict[str, Any], tasks: int | None = None) -> str:
    every = list(results["peers"])
    names = [n for n in every if not results["peers"][n].get("startup_only")]
    lines = _meta(results)
    for section, fn in (
        ("latency", lambda: _latency(results, names)),
        ("throughput", lambda: _throughput(results, names, tasks)),
        ("bandwidth", lambda: _bandwidth(results, names)),
        ("startup", lambda: _startup(results, every)),
    ):
        if section in results:
            lines += ["", *fn()]
    tg = targets(results)
    if tg:
        lines += [
            "",
            "== clustercore speed targets (issues 2, 3 and 16; informational, never asserted)",
        ]
        width = max(len(g) for g, _ in tg)
        lines += [f"  {g.ljust(width)}  {v}" for g, v in tg]
    lines.append("")
    left = results.get("leftover_processes")
    if left is not None:
        lines.append("leftover processes: " + ("none" if not left else "; ".join(left)))
    errors = results.get("errors", [])
    lines.append(f"errors: {len(errors)}")
    lines += [f"  {e}" for e in errors]
    return "\n".join(lines)
