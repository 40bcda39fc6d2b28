"""``trace()`` against real workers, and its page opened in headless Chromium: what the
page's script drew is read back from the DOM (``--dump-dom``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import clustercore as cc
from clustercore.tracing import chromium_command, find_chromium


def slow_on(x: int, slow: int) -> int:
    time.sleep(0.3 if x == slow else 0.001)
    if x == 13:
        raise ValueError("thirteen")
    return x


def test_trace_records_calls_and_batches(two: list[int]) -> None:
    cc.remotecall_fetch(abs, two[0], -1)  # before the trace: not recorded
    with cc.trace() as t:
        out = cc.pmap(slow_on, range(40), [39] * 40, batch_size=4, on_error=lambda e: -1)
        assert cc.remotecall_fetch(abs, two[1], -2) == 2
        with pytest.raises(cc.RemoteException):
            cc.remotecall_fetch(int, two[0], "x")
    assert out[13] == -1 and out[39] == 39
    assert t.pids == [1, *two] and t.missing == [] and t.dropped == {}
    batches = [e for e in t.events if e.function.endswith("slow_on")]
    assert sum(e.elements for e in batches) >= 40 and all(e.elements <= 4 for e in batches)
    assert any(e.failed for e in batches)  # the batch with 13 in it
    calls = [e for e in t.events if e.function in ("abs", "int")]
    assert [(e.pid, e.function, e.failed) for e in calls] == [(two[1], "abs", False), (two[0], "int", True)]
    for e in t.events:
        assert 0 <= e.start <= e.end <= t.duration + 0.05  # on the driver's clock, inside the block
        assert e.bytes > 0
    straggler = max(batches, key=lambda e: e.duration)
    assert straggler.duration >= 0.3  # the batch that held element 39
    busy = t.busy()
    assert set(busy) == {1, *two} and busy[1] == 0 and all(busy[p] > 0 for p in two)
    with pytest.raises(RuntimeError), cc.trace():
        with cc.trace():
            pass


def test_one_trace_at_a_time_and_nothing_recorded_after(two: list[int]) -> None:
    with cc.trace() as t:
        pass
    assert t.events == []
    cc.remotecall_fetch(abs, two[0], -1)
    assert cc.remotecall_fetch(lambda: __import__("clustercore").engine.cluster.PGRP.runner.trace, two[0]) is None


def test_the_last_call_of_a_block_is_recorded(two: list[int]) -> None:
    # The worker records a call before it answers: after, a call that ran past the
    # watchdog's interval could let the block end, and the trace be taken, first.
    missing = 0
    for _ in range(40):
        with cc.trace() as t:
            cc.remotecall_fetch(time.sleep, two[0], 0.02)
        missing += [e.function for e in t.events] != ["time.sleep"]
    assert missing == 0


def chromium_or_skip() -> str:
    found = find_chromium()
    if found is None:
        reason = "the trace page test needs Chromium (Debian package chromium; make services installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def dump_dom(chromium: str, page: Path, tmp_path: Path) -> str:
    command = [*chromium_command(chromium, str(tmp_path / "profile")), "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_page_draws_every_event_in_chromium(two: list[int], tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    with cc.trace() as t:
        cc.pmap(slow_on, range(24), [5] * 24, batch_size=3, on_error=lambda e: None)
    page = t.save(tmp_path / "run.html")
    text = page.read_text()
    assert "<script src" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    dom = dump_dom(chromium, page, tmp_path)
    assert f'data-drawn="{len(t.events)}"' in dom  # the script ran to its end
    bars = re.findall(r'<rect class="event( failed)?( last)?"[^>]*data-pid="(\d+)"', dom)
    assert len(bars) == len(t.events)
    assert {int(pid) for _, _, pid in bars} == set(two)
    assert sum(1 for failed, _, _ in bars if failed) == sum(1 for e in t.events if e.failed) >= 1
    assert sum(1 for _, last, _ in bars if last) == 1  # the bar that ended last, outlined
    assert "pid 1 (driver)" in dom and f"pid {two[0]}" in dom
    assert re.search(r'<tr class="straggler">', dom)  # the process that finished last
    assert "slow_on" in dom and f"{len(t.events)} calls and batches on 3 processes" in dom
    png = t.save(tmp_path / "run.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_save_refuses_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        cc.Trace().save(tmp_path / "run.svg")
    saved = cc.Trace(pids=[1]).save(tmp_path / "run.json")
    assert '"events": []' in saved.read_text()


def test_a_trace_survives_a_busy_worker(two: list[int]) -> None:
    release = threading.Event()
    ch = cc.RemoteChannel(lambda: cc.Channel(1), 1)
    f = cc.remotecall(cc.take, two[0], ch)
    with cc.trace(timeout=5) as t:
        cc.remotecall_fetch(abs, two[0], -3)
    release.set()
    cc.put(ch, 1)
    assert cc.fetch(f) == 1
    assert [(e.pid, e.function) for e in t.events] == [(two[0], "abs")]


def test_a_worker_that_joins_during_a_trace_is_traced(two: list[int]) -> None:
    with cc.trace() as t:
        (new,) = cc.addprocs(1)
        assert cc.remotecall_fetch(abs, new, -4) == 4
    assert t.pids == [1, *two, new] and t.missing == []
    assert [(e.pid, e.function) for e in t.events] == [(new, "abs")]


def test_names_from_workers_cannot_end_the_page_script_or_fill_the_title() -> None:
    import json

    from clustercore.tracing import Trace, TraceEvent

    hostile = "</script><!--<script><svg onload=alert(1)>&amp;"
    event = TraceEvent(pid=2, function=hostile, start=0.0, end=1.0, elements=1, bytes=10, failed=False)
    page = Trace(pids=[1, 2], events=[event]).to_html(title="nightly __DATA__ <b>")
    script = page.split('<script id="trace-data" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert "<" not in script and ">" not in script
    assert json.loads(script)["events"][0]["function"] == hostile
    assert "<h1>nightly __DATA__ &lt;b&gt;</h1>" in page


def test_the_page_is_a_file_of_html_with_one_script_and_its_holes(tmp_path: Path) -> None:
    """The template is ``clustercore/_assets/trace.html``, read as package data: its holes are the
    title (twice, as text) and the data (once, the whole JSON script), and its script parses."""
    from html.parser import HTMLParser
    from importlib.resources import files

    from clustercore.tracing import page_template

    template = files("clustercore").joinpath("_assets", "trace.html").read_text(encoding="utf-8")
    assert page_template() == template

    class Holes(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.open: list[str] = []
            self.holes: list[tuple[str, str]] = []
            self.scripts: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag not in ("meta", "br", "img", "input", "link"):  # void elements: no end tag
                self.open.append(tag)

        def handle_endtag(self, tag: str) -> None:
            assert self.open and self.open[-1] == tag, (self.open, tag)
            self.open.pop()

        def handle_data(self, data: str) -> None:
            if self.open and self.open[-1] == "script":
                self.scripts.append(data)
            for hole in ("__TITLE__", "__DATA__"):
                if hole in data:
                    self.holes.append((self.open[-1], data.strip()))

    parsed = Holes()
    parsed.feed(template)
    assert parsed.open == [] and parsed.holes == [("title", "__TITLE__"), ("h1", "__TITLE__"), ("script", "__DATA__")]
    assert parsed.scripts[0] == "__DATA__" and len(parsed.scripts) == 2
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("checking the page's script parses needs Node.js (Debian package nodejs); Chromium runs it too")
    script = tmp_path / "trace.js"
    script.write_text(parsed.scripts[1])
    done = subprocess.run([node, "--check", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
