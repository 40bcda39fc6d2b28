"""Parsing what srun prints, the command lines, and the progress display (no Slurm needed)."""

from __future__ import annotations

import subprocess

import pytest
from clustercore_slurm import command, lines
from clustercore_slurm.progress import Progress


def test_labels_are_split_whatever_their_padding() -> None:
    assert lines.split_label(" 3: hello: world") == (3, "hello: world")
    assert lines.split_label("11: x") == (11, "x")
    assert lines.split_label("0: ") == (0, "")
    assert lines.split_label("srun: error: boom") == (None, "srun: error: boom")


def test_markers_and_address() -> None:
    hello = lines.parse_hello("clustercore_slurm_task:3:ccnode2:42:0:8:1234")
    assert hello == lines.Hello(3, "ccnode2", "42", "0", 8, 1234)
    assert lines.parse_hello("clustercore_slurm_task:3:ccnode2:42::8:1234") is not None  # no step id
    assert lines.parse_hello("clustercore_slurm_task:x") is None
    assert lines.parse_exit("clustercore_slurm_exit:137") == 137
    assert lines.parse_exit("exit 0") is None
    assert lines.parse_address("clustercore_worker:4711#10.200.0.12") == ("10.200.0.12", 4711)
    assert lines.parse_address("clustercore_worker:x#y") is None


@pytest.mark.parametrize(
    ("line", "kind", "jobid"),
    [
        ("srun: job 14 queued and waiting for resources", "queued", "14"),
        ("srun: job 14 has been allocated resources", "allocated", "14"),
        ("srun: Job 12 step creation temporarily disabled, retrying (Requested nodes are busy)", "step_wait", "12"),
        ("srun: error: Unable to allocate resources: Invalid partition name specified", "error", None),
        ("allocation failure: Requested node configuration is not available", "error", None),
        ("srun: Job is in held state, pending scheduler release", "info", None),
    ],
)
def test_srun_messages(line: str, kind: str, jobid: str | None) -> None:
    notice = lines.classify_srun_line(line)
    assert (notice.kind, notice.jobid) == (kind, jobid)


def test_ended_tasks_are_read_from_srun_errors() -> None:
    notice = lines.classify_srun_line("srun: error: ccnode1: tasks 0-2,5: Killed")
    assert (notice.kind, notice.node, notice.tasks, notice.reason) == ("tasks_ended", "ccnode1", (0, 1, 2, 5), "Killed")
    one = lines.classify_srun_line("srun: error: vm: task 1: Exited with exit code 3")
    assert one.tasks == (1,) and one.reason == "Exited with exit code 3"


def test_the_task_wrapper_reports_around_the_worker() -> None:
    """Run the wrapper with a stand-in worker, outside Slurm, as a task would."""
    env = {"SLURM_PROCID": "2", "SLURMD_NODENAME": "n1", "SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4"}
    argv = command.step_argv("srun", [], ["sh", "-c", "read c; echo got $c; echo oops >&2; exit 3"], {})
    wrapper = argv[argv.index("sh") :]
    out = subprocess.run(wrapper, input="cookie\n", capture_output=True, text=True, env=env, timeout=10).stdout
    first, *rest = out.splitlines()
    hello = lines.parse_hello(first)
    assert hello is not None and (hello.procid, hello.node, hello.jobid, hello.ntasks) == (2, "n1", "7", 4)
    assert rest == ["got cookie", "oops", "clustercore_slurm_exit:3"]


def test_step_command_line() -> None:
    argv = command.step_argv("/usr/bin/srun", ["--ntasks=4"], ["/venv/bin/python", "-m", "clustercore"], {"dir": "/w"})
    assert argv[0] == "/usr/bin/srun"
    assert {"--label", "--input=all", "--export=ALL", "--kill-on-bad-exit=0", "--chdir=/w", "--ntasks=4"} <= set(argv)
    assert argv[-3:] == ["/venv/bin/python", "-m", "clustercore"]
    assert command.dry_run_argv("srun", ["--ntasks=4"]) == ["srun", "--test-only", "--ntasks=4", "true"]


def test_progress_is_quiet_for_a_fast_start(capsys: pytest.CaptureFixture[str]) -> None:
    p = Progress(None)
    for k in range(5):
        p.ready("9", k, 4)
    assert capsys.readouterr().err == ""


def test_progress_shows_a_waiting_job(capsys: pytest.CaptureFixture[str]) -> None:
    p = Progress(None)
    p.job_state("9", "PENDING", "Resources")
    p.job_state("9", "PENDING", "Resources")
    p.job_state("9", "PENDING", "Priority")
    p.ready("9", 1, 2)
    p.ready("9", 2, 2)
    assert capsys.readouterr().err.splitlines() == [
        "slurm job 9: PENDING (Resources)",
        "slurm job 9: PENDING (Priority)",
        "slurm job 9: 1 of 2 workers ready",
        "slurm job 9: 2 of 2 workers ready",
    ]


def test_progress_can_be_forced_either_way(capsys: pytest.CaptureFixture[str]) -> None:
    Progress(True).ready("9", 1, 2)
    Progress(False).job_state("9", "PENDING", "Resources")
    assert capsys.readouterr().err.splitlines() == ["slurm job 9: 1 of 2 workers ready"]
