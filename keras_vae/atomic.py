"""Atomic writes: one file at a time, or many paths committed together.

A reader (TF Serving, a resuming run, a notebook) must see either the old content or the new
one, never a half-written file. Both helpers write under a hidden temporary name in the
destination's own directory, so that the final `os.replace`/`os.rename` is atomic on POSIX:

* `atomic_file(path)`: a binary handle on `.<name>.<random>.tmp`, flushed, fsync'ed and
  renamed over `path` when the block ends without error; removed otherwise.
* `commit(moves)`: renames several staged paths (files or directories) onto their final
  paths, all or nothing: an error or KeyboardInterrupt half-way puts every final path back
  as it was. A SIGKILL can leave hidden `.tmp`/`.old-` paths, which readers ignore.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle on a new temporary file beside `path`, renamed over it on success.

    The file gets mode 0o666 minus the umask (like `open`), not `mkstemp`'s 0o600; parent
    directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    for _, aside in done:
        if aside is not None:
            remove(aside)
