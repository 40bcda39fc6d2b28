"""Workers as srun tasks on the single-node test Slurm: launch, identity, removal, failures."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clustercore_slurm import SlurmError, SlurmManager
from slurm_testing import PYTHON, squeue_jobs, wait_queue_empty, wait_until_gone

import clustercore as cc
from clustercore.testing import worker_info, worker_output

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]


def slurm_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("SLURM")}


def config_of(pid: int) -> dict[str, str]:
    config = worker_info(pid).config
    assert config is not None
    return dict(config.userdata)


def test_addprocs_outside_an_allocation(fresh_slurm: dict[str, str]) -> None:
    pids = cc.addprocs("slurm", ntasks=4)
    assert pids == sorted(pids) and len(pids) == 4 and cc.nworkers() == 4
    envs = [cc.remotecall_fetch(slurm_env, p) for p in pids]
    assert sorted(int(e["SLURM_PROCID"]) for e in envs) == [0, 1, 2, 3]
    assert len({e["SLURM_JOB_ID"] for e in envs}) == 1
    jobid = envs[0]["SLURM_JOB_ID"]
    for pid, env in zip(pids, envs, strict=True):
        data = config_of(pid)
        assert (str(data["procid"]), data["node"], data["jobid"]) == (
            env["SLURM_PROCID"],
            env["SLURMD_NODENAME"],
            jobid,
        )
    assert [line.split("|")[0] for line in squeue_jobs()] == [jobid]
    assert cc.remotecall_fetch(lambda: sys.executable, pids[0]) == sys.executable
    cc.rmprocs(pids)
    assert squeue_jobs() == []  # srun exited after the last worker: the allocation it made is released


def test_rmprocs_of_some_ends_those_tasks_only(fresh_slurm: dict[str, str]) -> None:
    pids = cc.addprocs("slurm", ntasks=4)
    ospids = {p: cc.remotecall_fetch(os.getpid, p) for p in pids}
    cc.rmprocs(pids[:2])
    assert wait_until_gone([ospids[p] for p in pids[:2]]) == []
    assert cc.workers() == pids[2:]
    assert [cc.remotecall_fetch(lambda x: x + 1, p, 1) for p in pids[2:]] == [2, 2]
    assert len(squeue_jobs()) == 1
    cc.rmprocs(pids[2:])
    assert squeue_jobs() == []


def test_a_worker_that_will_not_exit_is_killed_on_its_node(fresh_slurm: dict[str, str]) -> None:
    pids = cc.addprocs("slurm", ntasks=2)
    stuck = cc.remotecall_fetch(os.getpid, pids[0])
    cc.remotecall_fetch(atexit.register, pids[0], time.sleep, 3600)  # its exit hangs
    started = time.monotonic()
    cc.rmprocs(pids[0], waitfor=60)
    assert wait_until_gone([stuck]) == []
    assert time.monotonic() - started < 30
    assert cc.remotecall_fetch(lambda: "alive", pids[1]) == "alive"


def test_output_is_forwarded_with_the_worker_pid(fresh_slurm: dict[str, str]) -> None:
    pids = cc.addprocs("slurm", ntasks=2)
    with worker_output() as out:
        cc.remotecall_fetch(lambda: print("hello from the task", flush=True), pids[1])
        assert out.wait_for(f"From worker {pids[1]}:\thello from the task")


def test_interrupt_reaches_the_call_on_the_right_task(fresh_slurm: dict[str, str]) -> None:
    pids = cc.addprocs("slurm", ntasks=2)
    sleeping = cc.remotecall(time.sleep, pids[1], 60)
    cc.remotecall_fetch(lambda: None, pids[1])  # the sleep has started (calls start in order)
    cc.interrupt(pids[1])
    with pytest.raises(cc.RemoteException) as info:
        sleeping.fetch()
    assert isinstance(info.value.captured.ex, KeyboardInterrupt)
    assert cc.remotecall_fetch(lambda: 7, pids[1]) == 7


def test_a_task_killed_on_its_node_mid_call(fresh_slurm: dict[str, str]) -> None:
    pids = cc.addprocs("slurm", ntasks=2)
    victim = cc.remotecall_fetch(os.getpid, pids[0])
    call = cc.remotecall(time.sleep, pids[0], 60)
    cc.remotecall_fetch(lambda: None, pids[1])
    os.kill(victim, signal.SIGKILL)  # the simulated nodes share this machine's processes
    with pytest.raises(cc.ProcessExitedException):
        call.fetch()
    assert cc.remotecall_fetch(lambda: "still here", pids[1]) == "still here"


def test_a_dead_task_whose_connection_stays_open_is_cut(fresh_slurm: dict[str, str]) -> None:
    """Like a frozen node: the worker is stopped (no FIN ever comes) and Slurm reports its task dead."""
    pids = cc.addprocs("slurm", ntasks=2)
    config, manager = worker_info(pids[0]).config, worker_info(pids[0]).manager
    assert isinstance(manager, SlurmManager) and config is not None
    found = manager.steps.lookup(config)
    assert found is not None and found[1].hello is not None
    worker, wrapper = cc.remotecall_fetch(os.getpid, pids[0]), found[1].hello.shell_pid
    call = cc.remotecall(time.sleep, pids[0], 60)
    os.kill(worker, signal.SIGSTOP)
    os.kill(wrapper, signal.SIGKILL)  # srun: "task 0: Killed"; the stopped worker keeps its socket open
    started = time.monotonic()
    with pytest.raises(cc.ProcessExitedException):
        call.fetch()
    assert time.monotonic() - started < 20
    assert cc.remotecall_fetch(lambda: "fine", pids[1]) == "fine"


def test_the_step_killed_by_slurm_mid_call(fresh_slurm: dict[str, str]) -> None:
    pids = cc.addprocs("slurm", ntasks=3)
    data = config_of(pids[0])
    calls = [cc.remotecall(time.sleep, p, 60) for p in pids]
    subprocess.run(["scancel", "--signal=KILL", f"{data['jobid']}.{data['stepid']}"], check=True, timeout=30)
    for call in calls:
        with pytest.raises(cc.ProcessExitedException):
            call.fetch()
    assert wait_queue_empty() == []


def test_a_request_too_big_fails_at_once_with_slurms_message(fresh_slurm: dict[str, str]) -> None:
    started = time.monotonic()
    with pytest.raises(SlurmError, match="Requested node configuration is not available"):
        cc.addprocs("slurm", ntasks=10 * int(fresh_slurm["CLUSTERCORE_SLURM_CPUS_PER_NODE"]))
    assert time.monotonic() - started < 10
    assert cc.nprocs() == 1


def test_a_bad_partition_fails_with_slurms_message(fresh_slurm: dict[str, str]) -> None:
    with pytest.raises(SlurmError, match="Invalid partition"):
        cc.addprocs("slurm", ntasks=1, partition="nosuchpartition")


def test_launch_timeout_cancels_a_held_job(fresh_slurm: dict[str, str], capfd: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    with pytest.raises(
        TimeoutError, match=r"launch_timeout=4 s; it was PENDING \(JobHeldUser\); the job was cancelled"
    ):
        cc.addprocs("slurm", ntasks=2, srun_flags=["--hold"], launch_timeout=4)
    assert time.monotonic() - started < 20
    assert "PENDING (JobHeldUser)" in capfd.readouterr().err
    assert wait_queue_empty(5) == []


def test_a_pending_job_is_shown_then_its_workers_join(
    fresh_slurm: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    """A job that waits in the queue (--begin a few seconds ahead) is shown, then starts."""
    pids = cc.addprocs("slurm", ntasks=2, srun_flags=["--begin=now+3"])
    err = capfd.readouterr().err
    assert "PENDING (BeginTime)" in err
    assert "2 of 2 workers ready" in err
    assert len(pids) == 2


def test_ctrl_c_while_the_job_waits_in_the_queue_cancels_it(
    fresh_slurm: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    """The caller's KeyboardInterrupt while the job is PENDING: the job is gone from the queue
    when addprocs raises, and no progress line comes after."""

    def interrupt_once_pending() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any("|PENDING|" in job for job in squeue_jobs()):
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                return
            time.sleep(0.1)  # Slurm has no event for a job entering its queue

    sender = threading.Thread(target=interrupt_once_pending, daemon=True)
    sender.start()
    with pytest.raises(KeyboardInterrupt):
        cc.addprocs("slurm", ntasks=2, srun_flags=["--hold"], launch_timeout=None, progress=True)
    sender.join(5)
    assert cc.procs() == [1]
    assert squeue_jobs() == []  # cancelled before the interrupt reached us
    assert "workers ready" not in capfd.readouterr().err


def test_worker_info_tells_node_procid_and_manager(fresh_slurm: dict[str, str]) -> None:
    pids = cc.addprocs("slurm", ntasks=2)
    for pid in pids:
        info = cc.worker_info(pid)
        env = cc.remotecall_fetch(slurm_env, pid)
        assert (info.pid, info.manager, info.host) == (pid, "slurm", env["SLURMD_NODENAME"])
        assert info.ospid == cc.remotecall_fetch(os.getpid, pid)
        assert info.userdata == {
            "procid": int(env["SLURM_PROCID"]),
            "node": env["SLURMD_NODENAME"],
            "jobid": env["SLURM_JOB_ID"],
            "stepid": env["SLURM_STEP_ID"],
        }


def test_driver_killed_cancels_the_job(fresh_slurm: dict[str, str], tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import os, sys, time\n"
        "import clustercore as cc\n"
        "pids = cc.addprocs('slurm', ntasks=2)\n"
        "print('ready', cc.remotecall_fetch(lambda: os.environ['SLURM_JOB_ID'], pids[0]), flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([PYTHON, str(driver)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), line
        assert [j.split("|")[0] for j in squeue_jobs()] == [line.split()[1]]
    finally:
        proc.kill()
        proc.wait(30)
    assert wait_queue_empty(30) == []


def test_driver_killed_while_its_job_waits_cancels_the_job(fresh_slurm: dict[str, str], tmp_path: Path) -> None:
    """No worker runs yet, so only srun's parent-death signal can end the request."""
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import clustercore as cc\ncc.addprocs('slurm', ntasks=2, srun_flags=['--hold'], launch_timeout=None)\n"
    )
    proc = subprocess.Popen([PYTHON, str(driver)], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # progress shows the held job as soon as srun reports it queued
        assert "PENDING (JobHeldUser)" in line, line + proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(30)
    assert wait_queue_empty(30) == []


def test_many_tasks_on_one_node_with_overcommit(fresh_slurm: dict[str, str]) -> None:
    cpus = int(fresh_slurm["CLUSTERCORE_SLURM_CPUS_PER_NODE"])
    pids = cc.addprocs(SlurmManager(ntasks=cpus + 4, overcommit=True))
    assert len(pids) == cpus + 4
    procids = [cc.remotecall_fetch(lambda: int(os.environ["SLURM_PROCID"]), p) for p in pids]
    assert sorted(procids) == list(range(cpus + 4))
