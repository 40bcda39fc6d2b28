"""``SrunStep`` against a stand-in for srun (a shell script printing what srun would): no Slurm needed."""

from __future__ import annotations

import textwrap

import pytest
from clustercore_slurm.step import SrunStep

pytestmark = pytest.mark.timeout(30)

FAKE_SRUN = textwrap.dedent(
    """\
    echo "srun: job 77 queued and waiting for resources" >&2
    echo "srun: job 77 has been allocated resources" >&2
    read cookie
    echo "0: clustercore_slurm_task:0:n1:77:0:2:100"
    echo "1: clustercore_slurm_task:1:n2:77:0:2:101"
    echo "1: clustercore_worker:5001#10.0.0.2"
    echo "0: clustercore_worker:5000#10.0.0.1"
    echo "0: early output $cookie"
    read wait_for_test
    echo "0: late output"
    echo "srun: error: n2: task 1: Killed" >&2
    cat >/dev/null
    echo "0: clustercore_slurm_exit:0"
    """
)


def test_a_step_is_read_task_by_task() -> None:
    echoed: list[str] = []
    step = SrunStep(["sh", "-c", FAKE_SRUN], {"PATH": "/usr/bin:/bin"}, "secret\n", owns_allocation=False)
    step.echo = echoed.append
    step.start()
    with step.changed:
        assert step.changed.wait_for(lambda: echoed and all(t.ready for t in step.tasks.values()), 10)
        assert step.jobid == "77" and step.ntasks == 2 and not step.queued
        assert [(t.hello.node, t.address) for t in step.tasks.values() if t.hello] == [
            ("n1", ("10.0.0.1", 5000)),
            ("n2", ("10.0.0.2", 5001)),
        ]
        step.tasks[0].pid = 5  # what manage("register") does
    assert echoed == ["From slurm task 0:\tearly output secret"]
    step.send("go\n")
    with step.changed:
        assert step.changed.wait_for(lambda: step.tasks[1].ended and len(echoed) == 2, 10)
        assert step.tasks[1].end_reason == "Killed" and not step.tasks[0].ended
    assert echoed[1] == "From worker 5:\tlate output"
    step.end(grace=10)
    assert step.finished and step.returncode == 0
    assert step.tasks[0].exit_code == 0
    assert any("task 1: Killed" in m for m in step.messages)


def test_srun_that_cannot_start_is_reported() -> None:
    step = SrunStep(["/nonexistent/srun"], {}, "x\n", owns_allocation=False)
    try:
        step.start()
    except OSError:
        return  # no setpriv in front: Popen itself fails
    assert step.wait_finished(10) and step.returncode != 0  # setpriv in front: it cannot exec
    assert any("/nonexistent/srun" in m for m in step.messages)
