"""Message types of the cluster protocol (Julia's ``messages.jl``).

Each message is one frame (see :mod:`clustercore.wire.framing`); the frame
header carries the type and the response/notify reference ids, the payload
is a pickle whose shape depends on the type:

================  =======================================  ===========================
type              payload                                  header ids
================  =======================================  ===========================
CALL              (f, args, kwargs)                        response: the Future's RRID
CALL_FETCH        (f, args, kwargs)                        response: caller's waiter id
CALL_WAIT         (f, args, kwargs)                        response: Future, notify: waiter
REMOTE_DO         (f, args, kwargs)                        -
RESULT            value (flag ERROR: an exception)         response: the waiter id
IDENTIFY_SOCKET   sender pid                               -
IDENTIFY_ACK      None                                     -
JOIN_PGRP         JoinPGRP                                 -
JOIN_COMPLETE     JoinComplete                             -
GC                [(whence, id, pid, delta), ...]          -
INTERRUPT         None                                     -
DEFINE_FUNCTION   (function id, f)                         -
CALL_BATCH        [x, ...] (f(x) each; f(*x) if star)      response: waiter, notify: (star, function id)
================  =======================================  ===========================

CALL_BATCH answers with RESULT ``(values, {position: RemoteException})``; it is
how ``pmap`` runs elements with a function sent once per link.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class MsgType(IntEnum):
    CALL = 1
    CALL_FETCH = 2
    CALL_WAIT = 3
    REMOTE_DO = 4
    RESULT = 5
    IDENTIFY_SOCKET = 6
    IDENTIFY_ACK = 7
    JOIN_PGRP = 8
    JOIN_COMPLETE = 9
    GC = 10
    INTERRUPT = 11
    DEFINE_FUNCTION = 12
    CALL_BATCH = 13


@dataclass
class PeerInfo:
    """What a process needs to reach another worker."""

    pid: int
    connect_at: Any
    hostname: str = ""


@dataclass
class JoinPGRP:
    """From pid 1 to a new worker: its pid and the cluster it joins."""

    self_pid: int
    peers: list[PeerInfo]
    connect_now: list[int]
    topology: str
    lazy: bool
    enable_threaded_blas: bool
    driver_hostname: str
    environ: dict[str, str] = field(default_factory=dict)


@dataclass
class JoinComplete:
    """From a worker to pid 1 once it has joined."""

    cpu_threads: int
    ospid: int
    hostname: str
