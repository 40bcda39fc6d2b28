"""SlurmManager's options: checked before anything runs, and turned into srun flags (no Slurm needed)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from clustercore_slurm import SlurmManager, hooks
from clustercore_slurm.manager import in_allocation

import clustercore as cc
from clustercore.testing import manager_types


def test_defaults_ask_for_nothing_in_particular() -> None:
    m = SlurmManager()
    assert m.resource_flags({}) == ["--job-name=clustercore"]
    assert m.expected_workers({}) is None
    assert m.launch_timeout == 3600.0


def test_every_option_becomes_an_srun_flag() -> None:
    m = SlurmManager(
        ntasks=8,
        partition="debug",
        time=timedelta(hours=25, seconds=1),
        nodes="2-4",
        ntasks_per_node=4,
        cpus_per_task=2,
        mem_per_cpu="4G",
        gres="gpu:a100:1",
        account="proj1",
        qos="normal",
        job_name="my job",
        constraint="intel&ib",
        overcommit=True,
        srun_flags=["--exclusive", "--nodelist", "n[1-4]"],
    )
    assert m.resource_flags({}) == [
        "--ntasks=8",
        "--nodes=2-4",
        "--ntasks-per-node=4",
        "--cpus-per-task=2",
        "--mem-per-cpu=4G",
        "--gres=gpu:a100:1",
        "--partition=debug",
        "--time=1-01:00:01",
        "--account=proj1",
        "--qos=normal",
        "--job-name=my job",
        "--constraint=intel&ib",
        "--overcommit",
        "--exclusive",
        "--nodelist",
        "n[1-4]",
    ]


@pytest.mark.parametrize(
    ("value", "flag"),
    [(30, "30"), ("1:30:00", "1:30:00"), ("2-00:00:00", "2-00:00:00"), ("5-12", "5-12"), ("UNLIMITED", "UNLIMITED")],
)
def test_time_formats(value: Any, flag: str) -> None:
    assert f"--time={flag}" in SlurmManager(time=value).resource_flags({})


def test_inside_an_allocation_ntasks_defaults_to_slurm_ntasks() -> None:
    env = {"SLURM_JOB_ID": "12", "SLURM_NTASKS": "6"}
    assert in_allocation(env)
    assert SlurmManager().resource_flags(env)[0] == "--ntasks=6"
    assert SlurmManager().expected_workers(env) == 6
    assert SlurmManager(ntasks=2).expected_workers(env) == 2
    # a step shaped by nodes/tasks per node: srun decides, the tasks tell us how many
    assert "--ntasks=6" not in SlurmManager(nodes=2, ntasks_per_node=1).resource_flags(env)
    assert SlurmManager(nodes=3, ntasks_per_node=2).expected_workers({}) == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ntasks": 0},
        {"ntasks": "4"},
        {"ntasks": True},
        {"ntasks_per_node": -1},
        {"cpus_per_task": 1.5},
        {"nodes": "4-2"},
        {"nodes": "two"},
        {"time": "1 hour"},
        {"time": 0},
        {"time": timedelta(0)},
        {"mem_per_cpu": "4 GB"},
        {"mem_per_cpu": 0},
        {"gres": "gpu 1"},
        {"partition": "deb ug"},
        {"partition": ""},
        {"account": "a;rm -rf"},
        {"job_name": "two\nlines"},
        {"constraint": ""},
        {"overcommit": "yes"},
        {"srun_flags": "--exclusive"},
        {"srun_flags": ["--output=/tmp/x"]},
        {"srun_flags": ["-i0"]},
        {"srun_flags": ["--pty"]},
        {"srun_flags": ["--test-only"]},
        {"srun_flags": [3]},
        {"launch_timeout": 0},
        {"launch_timeout": float("inf")},
        {"progress": 1},
    ],
)
def test_malformed_values_are_a_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SlurmManager(**kwargs)


def test_addprocs_rejects_unknown_and_malformed_keywords_before_running_anything() -> None:
    with pytest.raises(TypeError, match="partitoin"):
        cc.addprocs("slurm", ntasks=2, partitoin="debug")
    with pytest.raises(ValueError, match="ntasks"):
        cc.addprocs("slurm", ntasks=-2)
    assert cc.nprocs() == 1


def test_the_manager_is_not_compared_by_value() -> None:
    a, b = SlurmManager(ntasks=2), SlurmManager(ntasks=2)
    assert a != b and len({a, b}) == 2


def test_hooks_leave_other_managers_alone() -> None:
    other, config = cc.ClusterManager(), cc.WorkerConfig()
    assert hooks.manager_types() == {"slurm": SlurmManager}
    assert hooks.launch(manager=other, params={}, launched=[], launch_ntfy=threading.Condition()) is None
    assert hooks.manage(manager=other, id=2, config=config, op="register") is None
    assert hooks.kill(manager=other, pid=2, config=config) is None
    assert hooks.connect(manager=other, pid=2, config=config) is None
    assert SlurmManager in manager_types().values()
