"""Locks for the work several sweep processes may want to do at once: a teacher, a student
family, a cell.

A lock is a :class:`filelock.FileLock` (``flock``), so the kernel frees it when its holder ends,
however it ends: a killed sweep leaves its lock files on disk, unlocked, and no heartbeat or
stale-lock detection is needed. On NFS this relies on the file system's lock support.
"""

from __future__ import annotations

from pathlib import Path

import filelock


class Lock:
    """An exclusive lock on the file ``path``; ``what`` names what it guards in messages."""

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._lock = filelock.FileLock(str(self.path))

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(blocking=False)
        except filelock.Timeout:
            return False
        return True

    def release(self) -> None:
        """Give the lock back (safe to call when it is not held)."""
        self._lock.release(force=True)
