"""``share``: one large array in memory every process on this host maps (issue 15).

``share(a)`` copies ``a`` once into anonymous shared memory (a sealed memfd,
:mod:`clustercore.wire.memfd`) and returns it as a read-only array. Every call
it is passed to, to any process on this host, passes those pages, not bytes;
between hosts it travels as any array does. The memory goes when the last
process holding it lets it go: the owner's array, and each receiver's.
"""

from __future__ import annotations

from typing import Any

from .wire import memfd


def share(array: Any) -> Any:
    """A read-only copy of ``array`` (a numpy array of plain values) in shared memory.

    Pass it to any number of calls (``remotecall``, ``pmap``, ``everywhere``, inside
    other values too): each process on this host that receives it maps the same pages,
    read-only (``numpy.array(x)`` makes a private, writable copy). Arrays under 512 KiB are
    plain read-only copies: they cost less to send than to share.
    """
    import numpy as np

    a = np.asarray(array)
    if a.dtype.hasobject:
        raise TypeError("share takes arrays of plain values, not of Python objects")
    if not memfd.SUPPORTED or a.nbytes < memfd.MEMFD_MIN:
        out = np.array(a, order="C")
    else:
        buffer = memfd.share(np.ascontiguousarray(a))
        out = np.frombuffer(buffer, dtype=a.dtype, count=a.size).reshape(a.shape)
    out.flags.writeable = False
    return out
