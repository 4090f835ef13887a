"""Lock files for work that several processes (sweep shards) may want to do at the same time.

A lock is a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local and NFS v3+
file systems) that names its holder: host, process id, the boot and pid-namespace ids of its
kernel, and what it protects. While a lock is held a daemon thread touches the file every
``heartbeat`` seconds.

A lock is **stale** (its holder is gone) when

- its holder runs on this kernel and pid namespace, and that process no longer exists (a killed
  shard on the same machine is detected at once), or
- its file was not touched for ``stale_after`` seconds (a holder on another machine, or one
  whose process cannot be checked from here).

A stale lock is broken under a second, short-lived ``<lock>.break`` lock, so two waiters never
both remove a lock and both take it. Holders release their locks in ``finally`` blocks; the
sweep turns SIGTERM (what SLURM sends at a time limit) into a normal exit, so only SIGKILL or a
crash leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HEARTBEAT_S = float(os.environ.get("ATTNLESS_LOCK_HEARTBEAT_S", "30"))
STALE_AFTER_S = float(os.environ.get("ATTNLESS_LOCK_STALE_S", "600"))
BREAK_STALE_S = 60.0  # a .break lock older than this was left by a crashed breaker


def _read_id(path: str) -> str:
    with contextlib.suppress(OSError):
        if path.startswith("/proc/self/ns/"):
            return os.readlink(path)
        return Path(path).read_text().strip()
    return ""


HOST = socket.gethostname()
BOOT_ID = _read_id("/proc/sys/kernel/random/boot_id")
PID_NS = _read_id("/proc/self/ns/pid")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (in this pid namespace)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(info: dict[str, Any] | None) -> str:
    if not info:
        return "an unknown process (lock file being written)"
    since = time.strftime("%H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} (since {since})"


class FileLock:
    """An exclusive lock file at ``path``; ``what`` says what it protects (for messages)."""

    def __init__(
        self,
        path: str | Path,
        what: str,
        heartbeat: float | None = None,
        stale_after: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.heartbeat = HEARTBEAT_S if heartbeat is None else heartbeat
        self.stale_after = STALE_AFTER_S if stale_after is None else stale_after
        self.token: str | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ state

    @property
    def held(self) -> bool:
        return self.token is not None

    def read(self) -> tuple[dict[str, Any] | None, float | None]:
        """The holder's record and the file's mtime; (None, None) when there is no lock."""
        try:
            mtime = self.path.stat().st_mtime
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, None
        try:
            info = json.loads(text)
            return (info if isinstance(info, dict) else {}), mtime
        except ValueError:
            return {}, mtime  # being written right now, or truncated

    def is_stale(self, info: dict[str, Any] | None, mtime: float | None) -> bool:
        if mtime is None:
            return False
        same_kernel = (
            info
            and info.get("host") == HOST
            and info.get("boot_id") == BOOT_ID
            and info.get("pid_ns") == PID_NS
        )
        if same_kernel and not pid_alive(int(info.get("pid", -1))):
            return True
        return time.time() - mtime > self.stale_after

    # ------------------------------------------------------------------ acquire/release

    def try_acquire(self) -> bool:
        """Take the lock if it is free (or stale); never waits."""
        if self.held:
            return True
        for _ in range(2):
            if self._create():
                return True
            if not self._break_if_stale():
                return False
        return False

    def _create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        info = {
            "what": self.what,
            "host": HOST,
            "pid": os.getpid(),
            "boot_id": BOOT_ID,
            "pid_ns": PID_NS,
            "started": time.time(),
            "token": token,
        }
        try:
            os.write(fd, (json.dumps(info) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.token = token
        self._start_heartbeat()
        return True

    def _break_if_stale(self) -> bool:
        info, mtime = self.read()
        if mtime is None:
            return True  # released meanwhile: try again
        if not self.is_stale(info, mtime):
            return False
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - breaker.stat().st_mtime > BREAK_STALE_S:
                    breaker.unlink()
            return False
        os.close(fd)
        try:
            again, mtime_again = self.read()
            if again == info and mtime_again is not None and self.is_stale(again, mtime_again):
                log.warning(
                    "removing the stale lock %s (%s), held by %s, which is gone",
                    self.path,
                    self.what,
                    describe_holder(info),
                )
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            with contextlib.suppress(FileNotFoundError):
                breaker.unlink()
        return True

    def acquire(self, poll: float = 5.0, timeout: float | None = None) -> None:
        """Wait until the lock is ours, saying once per holder who we are waiting for."""
        start = time.monotonic()
        announced: str | None = None
        while not self.try_acquire():
            info, _ = self.read()
            holder = describe_holder(info)
            if holder != announced:
                log.warning("waiting for %s: locked by %s (%s)", self.what, holder, self.path)
                announced = holder
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"{self.path}: still locked by {holder} after {timeout:.0f} s")
            time.sleep(poll)

    def release(self) -> None:
        """Give the lock back (only if it is still ours); safe to call twice."""
        if self.token is None:
            return
        if self._stop is not None:
            self._stop.set()
        info, _ = self.read()
        if info and info.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.token = None

    def _start_heartbeat(self) -> None:
        stop = threading.Event()
        token = self.token

        def beat() -> None:
            while not stop.wait(self.heartbeat):
                info, _ = self.read()
                if not info or info.get("token") != token:
                    log.warning("%s: lock lost (taken over as stale?)", self.path)
                    return
                with contextlib.suppress(OSError):
                    os.utime(self.path)

        self._stop = stop
        self._thread = threading.Thread(target=beat, name=f"lock:{self.path.name}", daemon=True)
        self._thread.start()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
