"""Atomic writes: one file at a time, or many paths committed together.

A reader (TF Serving, a resuming run, a notebook) must see either the old content or the new
one, never a half-written file. Both helpers write under a hidden temporary name in the
destination's own directory, so that the final `os.replace`/`os.rename` is atomic on POSIX:

* `atomic_file(path)`: a binary handle on `.<name>.<random>.tmp`, flushed, fsync'ed and
  renamed over `path` when the block ends without error; removed otherwise.
* `atomic_path(path)`: the same for writers that want a file name (`model.save`,
  `save_weights`): a hidden temporary path ending in `path`'s own name.
* `commit(moves)`: renames several staged paths (files or directories) onto their final
  paths, all or nothing: an error or KeyboardInterrupt half-way puts every final path back
  as it was. A SIGKILL can leave hidden `.tmp`/`.old-` paths, which readers ignore.

After every rename the directory itself is fsync'ed: the rename is a change of the directory,
and without it a power loss could leave the old entry, or a new name whose data never reached
the disk. A write that finds the disk full raises `DiskFullError` (an `OSError` with errno
ENOSPC) naming the final path and the space left; the previous file is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO


class DiskFullError(OSError):
    """A write found no space left on the disk; the file it was to replace is intact."""

    def __init__(self, path: str | os.PathLike, cause: BaseException | None = None):
        path = Path(path)
        self.free = free_bytes(path.parent)
        detail = f": {type(cause).__name__}" if cause is not None else ""
        super().__init__(
            errno.ENOSPC, f"No space left on the disk ({format_bytes(self.free)} free){detail}",
            str(path),
        )  # fmt: skip


def is_disk_full(error: BaseException) -> bool:
    """True for an error of a full disk or an exhausted quota: an `OSError` with errno ENOSPC
    or EDQUOT, or any error (h5py's, TensorFlow's) whose message says so."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text


def free_bytes(directory: str | os.PathLike) -> int:
    """Bytes an unprivileged process may still write on the disk of `directory` (or of its
    nearest existing parent); 0 if unknown."""
    directory = Path(directory).absolute()
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    try:
        stats = os.statvfs(directory)
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize


def format_bytes(count: float) -> str:
    """`1536` -> `'1.5 KB'`: bytes in B, KB, MB, GB or TB (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def fsync_directory(directory: str | os.PathLike) -> None:
    """Makes the entries of `directory` (renames, new names) durable; filesystems that
    cannot fsync a directory are skipped."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def _disk_full_names(path: Path) -> Iterator[None]:
    """Re-raises a full disk's error, whatever raised it, as `DiskFullError(path)`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:
        if is_disk_full(error):
            raise DiskFullError(path, error) from error
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle on a new temporary file beside `path`, renamed over it on success.

    The file gets mode 0o666 minus the umask (like `open`), not `mkstemp`'s 0o600; parent
    directories are created. The data and then the directory entry are fsync'ed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        with _disk_full_names(path):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            fsync_directory(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary path beside `path` (`.tmp-<random>-<name>`: it keeps the name's
    extension, which `model.save` and `save_weights` check) for the caller to write; on
    success the file is fsync'ed and renamed over `path`, then the directory is fsync'ed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{secrets.token_hex(6)}-{path.name}"
    try:
        with _disk_full_names(path):
            yield tmp
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            fsync_directory(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_file(path) as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, value: Any, sort_keys: bool = False) -> None:
    """Writes `value` as indented JSON (and a final newline) to `path` atomically."""
    write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys) + "\n")


def remove(path: Path) -> None:
    """Deletes a file, symlink or directory tree; a missing path is not an error."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def commit(moves: Sequence[tuple[Path | None, Path, bool]]) -> None:
    """Renames each staged path onto its final path, all or nothing.

    Args:
        moves: `(staged, final, may_replace)`; `staged=None` deletes `final`. An existing
            `final` is renamed aside to a hidden `.old-*` name first (and deleted at the end)
            if `may_replace`, else `FileExistsError`. On any error, including
            KeyboardInterrupt, every final path is restored as it was.
    """
    done: list[tuple[Path, Path | None]] = []
    try:
        for staged, final, may_replace in moves:
            aside = None
            if final.exists():
                if not may_replace:
                    raise FileExistsError(f"{final} appeared while writing; nothing was written")
                aside = final.with_name(f".old-{final.name}-{secrets.token_hex(4)}")
                os.rename(final, aside)
            done.append((final, aside))
            if staged is not None:
                os.rename(staged, final)
    except BaseException:
        for final, aside in reversed(done):
            remove(final)
            if aside is not None:
                os.rename(aside, final)
        raise
    for directory in {final.parent for final, _ in done}:
        fsync_directory(directory)
    for _, aside in done:
        if aside is not None:
            remove(aside)
