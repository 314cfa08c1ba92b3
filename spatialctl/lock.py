"""One writer per output: an exclusive ``flock`` on a lock file beside the output.

The kernel drops a ``flock`` when its holder dies (``kill -9`` included), so a lock is never stale; the file
names its holder (host, pid, start time, command) for the message a second writer gets. Local and NFSv4 disks
honour ``flock``; object stores (``s3://`` ...) have no locks, so there one writer per output must come from
the job layout (disjoint ``--shard``s of one manifest), as the README says.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from spatialctl import store
from spatialctl.errors import SpatialctlError


class Busy(SpatialctlError):
    """Another process is writing this output (exit 1; the item is not recorded as failed)."""


def lock_path(output: str) -> str:
    return store.beside(output, ".lock")


@contextmanager
def hold(output: str) -> Iterator[None]:
    """Hold the write lock of ``output`` (a no-op on object stores); raise Busy when another process holds it."""
    fs, _ = store._fs(output)
    if not store._is_local(fs):
        yield
        return
    _, path = store._fs(lock_path(output))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise Busy(f"{output}: being written by {holder} (lock file {path}); wait for it to finish") from None
        try:  # the holder before us may have unlinked the file between our open and our flock: retry then
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now} ({' '.join(sys.argv[:2])})".encode())
    try:
        yield
    finally:
        os.unlink(path)  # unlink before unlocking, so a waiter never locks a file that is about to vanish
        os.close(fd)
