"""One writer per run directory: an advisory lock held for the life of the training process.

`DirectoryLock(run_dir).acquire()` takes an exclusive `flock` on `run_dir/.keras-vae.lock`
without waiting and writes the holder's process id and host name into it. A second process
asking for the same directory gets `DirectoryInUseError` at once, naming the holder. The
operating system drops the lock when the holder's file descriptor closes, so a process killed
by SIGKILL or a power loss never leaves a stale lock: the file may stay, but nobody holds it.

The lock file is never deleted: deleting it would let one process lock the old file and
another a new one under the same name. `flock` locks one open file description, so a second
lock in the same process is refused too. On NFS, Linux maps `flock` to POSIX byte-range
locks, which the server keeps; on filesystems without locking, `acquire` fails with the
operating system's error.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

LOCK_FILE = ".keras-vae.lock"


class DirectoryInUseError(RuntimeError):
    """Another process holds the lock of the directory."""


class DirectoryLock:
    """An exclusive, non-blocking lock on a directory, also a context manager.

    Args:
        directory: The directory to lock (created if needed).
        option: The command-line option that chose the directory, for the message.
    """

    def __init__(self, directory: str | os.PathLike, option: str = "--output"):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.option = option
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        """Takes the lock or raises `DirectoryInUseError` naming the process that holds it."""
        if self._fd is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise DirectoryInUseError(
                f"run directory {self.directory} is in use by {holder}; wait for it to "
                f"finish or stop it, or choose another {self.option}."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drops the lock (closing the file drops it too); the file stays."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _describe_holder(fd: int) -> str:
    """`process N on host H` from the lock file, or `another process` while the holder has
    not written its name yet."""
    try:
        owner = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"process {int(owner['pid'])} on host {owner['host']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "another process"
