"""Ctrl-C on the main thread while it waits for a thread of its own."""

from __future__ import annotations

import signal
import threading

import pytest

from clustercore.sigint import WaitableThread


def test_an_interrupted_wait_leaves_the_thread_waitable() -> None:
    """The main thread is interrupted while it waits for a running thread: afterwards the
    thread still counts as running and a second wait still waits for it (``join`` here would
    take it for stopped on CPython < 3.13; that lost ``addprocs`` roll-backs their workers)."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C arrives only on the main thread")
    running, release, interrupted = threading.Event(), threading.Event(), threading.Event()

    def target() -> None:
        running.set()
        release.wait(60)

    def ctrl_c_until_interrupted() -> None:
        running.wait(60)
        while not interrupted.wait(0.02):  # until the main thread says it got one
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    thread = WaitableThread(target, name="waited-for")
    sender = threading.Thread(target=ctrl_c_until_interrupted)
    try:
        thread.start()
        sender.start()
        with pytest.raises(KeyboardInterrupt):
            thread.wait(60)
    finally:
        interrupted.set()
        sender.join()
        signal.signal(signal.SIGINT, previous)
    assert thread.is_alive()
    assert not thread.wait(0)
    release.set()
    assert thread.wait(60)
    assert not thread.is_alive()


def test_a_thread_never_started_has_nothing_to_wait_for() -> None:
    assert WaitableThread(lambda: None, name="never-started").wait(0)
