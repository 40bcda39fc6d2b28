"""``SrunStep``: one running ``srun`` and the tasks it reports on its labelled stdout.

The step owns the srun process: a thread that started it and waits for it
(so ``--pdeathsig`` fires only when this process dies), one reader per
output pipe, and srun's stdin, which carries the cookie and stays open as
the workers' lifeline. Everything it learns (task hellos, addresses, exits,
srun's queue messages) updates ``Task`` records under ``changed`` and bumps
``version``, which the launcher waits on.
"""

from __future__ import annotations

import collections
import logging
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from clustercore.plugin import emit_worker_output

from . import command, lines, slurmctl
from .errors import SlurmError
from .lines import Hello

log = logging.getLogger(__name__)

END_GRACE = 10.0  # after closing stdin, how long the workers get to exit before srun is terminated
TERM_GRACE = 15.0  # srun's own wait for the tasks after SIGTERM (Slurm's KillWait is usually ~30 s or less)
QUEUE_GRACE = 15.0  # after srun ended, how long its job may stay listed (COMPLETING) before we give up waiting
DROP_GRACE = 2.0  # after a task ended, how long its TCP connection may stay open before we cut it
TCP_ESTABLISHED = 1


@dataclass(eq=False)
class Task:
    """One srun task; ``pid`` is its clustercore pid once the worker joined."""

    number: int
    hello: Hello | None = None
    address: tuple[str, int] | None = None
    exit_code: int | None = None
    end_reason: str | None = None
    pid: int | None = None
    removed: bool = False
    sock: socket.socket | None = None
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=30))
    gone: threading.Event = field(default_factory=threading.Event)

    @property
    def ended(self) -> bool:
        return self.gone.is_set()

    @property
    def ready(self) -> bool:
        return self.address is not None and self.hello is not None and not self.ended

    def describe(self) -> str:
        where = f" on {self.hello.node}" if self.hello else ""
        how = f" ({self.end_reason})" if self.end_reason else ""
        said = "\n    ".join(self.output) or "(no output)"
        return f"task {self.number}{where}{how}:\n    {said}"


class SrunStep:
    """A started ``srun``: its tasks, its job, and how to end it."""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        stdin_text: str,
        *,
        owns_allocation: bool,
        jobid: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = env
        self.owns_allocation = owns_allocation
        self.jobid = jobid
        self.changed = threading.Condition()
        self.version = 0
        self.tasks: dict[int, Task] = {}
        self.ntasks: int | None = None
        self.queued = False
        self.step_wait: str | None = None
        self.messages: collections.deque[str] = collections.deque(maxlen=50)
        self.launching = True
        self.returncode: int | None = None
        self.finished = False
        self.process: subprocess.Popen[bytes] | None = None
        self._stdin_text = stdin_text
        self.echo: Callable[[str], None] = _print_stdout  # where task output goes (the driver's stdout)
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stdin_lock = threading.Lock()
        self._end_lock = threading.Lock()

    # --- starting --------------------------------------------------------------------

    def start(self) -> None:
        """Start srun; raises if it could not be executed."""
        owner = threading.Thread(target=self._own, name="clustercore-srun", daemon=True)
        owner.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def _own(self) -> None:
        try:
            process = subprocess.Popen(
                [*command.parent_death_prefix(), *self.argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                start_new_session=True,  # a Ctrl-C at the driver's terminal must not reach the workers
            )
        except OSError as exc:
            self._start_error = exc
            self._started.set()
            return
        self.process = process
        self.send(self._stdin_text)
        readers = [
            threading.Thread(target=self._read, args=(process.stdout, self._on_stdout), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, self._on_stderr), daemon=True),
        ]
        for reader in readers:
            reader.start()
        self._started.set()
        returncode = process.wait()
        for reader in readers:
            reader.join(END_GRACE)
        with self.changed:
            self.returncode = returncode
            self.finished = True
            for task in self.tasks.values():
                self._end_task(task, None, "the srun step ended")
            self._bump()
        log.debug("srun for job %s exited with %s", self.jobid, returncode)

    def send(self, text: str) -> None:
        """Write to srun's stdin, which it broadcasts to every task."""
        assert self.process is not None and self.process.stdin is not None
        with self._stdin_lock:
            try:
                self.process.stdin.write(text.encode())
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    # --- reading -----------------------------------------------------------------------

    @staticmethod
    def _read(stream: IO[bytes] | None, handle: Callable[[str], None]) -> None:
        assert stream is not None
        for raw in iter(stream.readline, b""):
            try:
                handle(raw.decode(errors="replace").rstrip("\r\n"))
            except Exception:  # one bad line must not stop the reader
                log.exception("clustercore-slurm: could not handle srun output line %r", raw)

    def _on_stdout(self, line: str) -> None:
        number, text = lines.split_label(line)
        if number is None:
            self.echo(line)
            return
        with self.changed:
            task = self._task(number)
            if task.hello is None and (hello := lines.parse_hello(text)) is not None:
                task.hello = hello
                self.ntasks = hello.ntasks
                self.jobid = self.jobid or hello.jobid
                self.queued = False
                self._bump()
                return
            if task.address is None and (address := lines.parse_address(text)) is not None:
                task.address = address
                self._bump()
                return
            if (code := lines.parse_exit(text)) is not None:
                self._end_task(task, code, f"exit code {code}")
                self._bump()
                return
            task.output.append(text)
            prefix = f"From worker {task.pid}:" if task.pid is not None else f"From slurm task {task.number}:"
        self.echo(f"{prefix}\t{text}")

    def _on_stderr(self, line: str) -> None:
        number, text = lines.split_label(line)
        notice = lines.classify_srun_line(text if number is None else line)
        with self.changed:
            if notice.kind == "queued":
                self.jobid, self.queued = notice.jobid, True
            elif notice.kind == "allocated":
                self.jobid, self.queued = notice.jobid, False
            elif notice.kind == "step_wait":
                self.step_wait = notice.reason
            elif notice.kind == "step_created":
                self.step_wait = None
            else:
                if notice.kind == "tasks_ended":
                    for number_ in notice.tasks:
                        self._end_task(self._task(number_), None, notice.reason or "ended")
                self.messages.append(line)
                if not self.launching:
                    print(line, file=sys.stderr, flush=True)
            self._bump()

    def wait_for_change(self, seen: int, timeout: float | None) -> None:
        """With ``changed`` held: block until ``version`` moves past ``seen``, or ``timeout``."""
        self.changed.wait_for(lambda: self.version != seen, timeout)

    def _task(self, number: int) -> Task:
        task = self.tasks.get(number)
        if task is None:
            task = self.tasks[number] = Task(number)
        return task

    def poke(self) -> None:
        """Wake whoever waits for a change (e.g. to notice that the launch was cancelled)."""
        with self.changed:
            self._bump()

    def _bump(self) -> None:
        self.version += 1
        self.changed.notify_all()

    def _end_task(self, task: Task, code: int | None, reason: str) -> None:
        if task.ended:
            return
        task.exit_code, task.end_reason = code, reason
        task.gone.set()
        if task.sock is not None:
            timer = threading.Timer(DROP_GRACE, drop_connection, args=(task.sock,))
            timer.daemon = True
            timer.start()

    # --- ending ----------------------------------------------------------------------------

    def wait_finished(self, timeout: float | None) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.finished, timeout)

    def end(self, grace: float = END_GRACE) -> None:
        """Close the lifeline (the workers exit), make sure srun ends, and its job leaves the queue."""
        with self._end_lock:
            if self.process is not None and not self.finished:
                self._stop(grace)
            if self.owns_allocation and self.jobid and not slurmctl.wait_job_gone(self.jobid, QUEUE_GRACE):
                log.warning("slurm job %s is still in the queue %g s after its srun ended", self.jobid, QUEUE_GRACE)

    def _stop(self, grace: float) -> None:
        assert self.process is not None
        with self._stdin_lock:
            try:
                if self.process.stdin is not None:
                    self.process.stdin.close()
            except OSError:
                pass
        if not self.tasks:
            grace = 0.0  # no task started (still queued): nothing to wait for
        if self.wait_finished(grace):
            return
        log.info("srun for job %s did not end %g s after its stdin closed; terminating it", self.jobid, grace)
        self._signal(signal.SIGTERM)  # srun cancels the step (and the allocation it made)
        if self.wait_finished(TERM_GRACE):
            return
        self._signal(signal.SIGKILL)
        if self.owns_allocation and self.jobid:
            slurmctl.cancel(self.jobid)
        self.wait_finished(END_GRACE)

    def cancel(self) -> None:
        """End the step now: the whole job if srun made it, else just this step."""
        if self.owns_allocation and self.jobid:
            slurmctl.cancel(self.jobid)
        elif not self.finished:
            self._signal(signal.SIGTERM)
        self.end(grace=TERM_GRACE)

    def _signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.send_signal(signum)
            except OSError:
                pass

    def kill_task(self, task: Task, grace: float) -> None:
        """Wait ``grace`` s for a task to end by itself; if not, kill its worker on its node."""
        if task.gone.wait(grace) or self.finished or task.hello is None:
            return
        hello = task.hello
        log.info("worker %s (slurm task %s) still runs; killing it on %s", task.pid, task.number, hello.node)
        argv = command.force_kill_argv(self.argv[0], hello.jobid, hello.node, hello.shell_pid)
        try:
            result = slurmctl.run(argv)
            if result.returncode != 0:
                log.warning("could not kill slurm task %s: %s", task.number, result.stderr.strip())
        except SlurmError as exc:
            log.warning("could not kill slurm task %s: %s", task.number, exc)
        if not task.gone.wait(grace):
            log.warning("slurm task %s (worker %s) did not end", task.number, task.pid)

    def live_tasks(self) -> list[Task]:
        with self.changed:
            return [t for t in self.tasks.values() if not t.ended and not t.removed]


def drop_connection(sock: socket.socket) -> None:
    """Cut a worker's connection whose peer is gone without a FIN (e.g. its node died)."""
    try:
        if sock.fileno() == -1:
            return
        state = _tcp_state(sock)
        if state is None or state == TCP_ESTABLISHED:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _tcp_state(sock: socket.socket) -> int | None:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11), 8)
    except OSError:
        return None
    return int(struct.unpack("B", info[:1])[0])


def _print_stdout(text: str) -> None:
    emit_worker_output(text)
