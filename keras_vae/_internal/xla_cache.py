"""The `keras-vae` command's persistent XLA compilation cache (TensorFlow's own, switched on
through `TF_XLA_FLAGS`).

A training run's first step compiles the train function with XLA (about 2 s of a 13 s start
on the 784-500-20 model here); TensorFlow can keep the compiled executables on disk and load
them the next time the same computation is compiled (`--tf_xla_persistent_cache_directory`).
`configure()` turns that on for the command line; the library never changes a process-wide
setting on its own.

Safety of the entries. TensorFlow names an entry by the HLO module's hash, the signature of
its arguments and the device type, stores the whole HLO module with the executable, and by
default loads an entry only when that stored module equals the one being compiled (its
strict signature check): an entry is never used for another computation. What the HLO does
not hold is keyed here by the directory: `<root>/tf<version>-<digest>`, the digest of the
TensorFlow version, the machine, the CPU's model and flags (the executables are compiled for
the host's instruction set) and the user's `XLA_FLAGS` (compiler options) and
`TF_ENABLE_ONEDNN_OPTS`, so that another TensorFlow, another CPU sharing the home directory,
or other compiler flags never read them.

Failures. TensorFlow fails the compiling op (the training step) when it cannot write an
entry: a read-only directory, a full disk. `configure()` therefore checks before training that
the directory takes a file and that `MIN_FREE_BYTES` are free; otherwise it uses an existing
directory read-only (`--tf_xla_persistent_cache_read_only`), or no cache. An error that names
the directory later (the disk filled up during the run, a damaged entry) is turned into one
line by `describe_failure`, which says how to turn the cache off.

Size. TensorFlow never deletes an entry, so every new model shape, batch size or TensorFlow
version adds some (about 1 MB each for the 784-500-20 model). Before a read-write start,
`prune()` deletes the oldest entries under the root, those of other TensorFlow versions and
CPUs included, until the root holds at most `KERAS_VAE_XLA_CACHE_MB` megabytes (default
`DEFAULT_MAX_MB`). An entry deleted while another process runs is compiled again there.

Settings: `KERAS_VAE_XLA_CACHE=off` (or `0`, `false`, `no`) turns it off; a path puts it
there instead of `$XDG_CACHE_HOME/keras_vae/xla` (default `~/.cache/keras_vae/xla`); a
`TF_XLA_FLAGS` that already names a cache directory is left as it is.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import tempfile
from importlib import metadata
from pathlib import Path

ENV = "KERAS_VAE_XLA_CACHE"
SIZE_ENV = "KERAS_VAE_XLA_CACHE_MB"
#: The root's size bound: a few hundred entries of a small model's train functions.
DEFAULT_MAX_MB = 512
_OFF = ("off", "0", "false", "no")
#: Free space the cache needs before it is written to (one entry of the 784-500-20 train
#: function is about 1 MB; a run writes a few).
MIN_FREE_BYTES = 256 * 2**20
_DIRECTORY_FLAG = "--tf_xla_persistent_cache_directory"
_READ_ONLY_FLAG = "--tf_xla_persistent_cache_read_only"
#: Environment variables that may change what XLA compiles for the same HLO: its compiler
#: options, and TensorFlow's oneDNN switch (kept in the key to be safe).
_COMPILER_ENVIRONMENT = ("XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS")


def root(environ=os.environ) -> Path | None:
    """The cache's root directory, or None when `KERAS_VAE_XLA_CACHE` turns it off."""
    chosen = environ.get(ENV, "").strip()
    if chosen.lower() in _OFF:
        return None
    if chosen:
        return Path(chosen).expanduser()
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "keras_vae" / "xla"


def directory(environ=os.environ) -> Path | None:
    """`root()/tf<version>-<digest>`: the entries of this TensorFlow, CPU and compiler options."""
    base = root(environ)
    if base is None:
        return None
    version = _tensorflow_version()
    options = [environ.get(name, "") for name in _COMPILER_ENVIRONMENT]
    facts = "\n".join((version, platform.machine(), _cpu(), *options))
    return base / f"tf{version}-{hashlib.sha256(facts.encode()).hexdigest()[:12]}"


def configure(environ=os.environ) -> str:
    """Adds the cache to `environ["TF_XLA_FLAGS"]` (call it before TensorFlow compiles
    anything); returns what it did: `"read-write DIR"`, `"read-only DIR (why)"`, `"off
    (why)"` or `"the user's (TF_XLA_FLAGS)"`."""
    flags = environ.get("TF_XLA_FLAGS", "")
    if _DIRECTORY_FLAG in flags:
        return "the user's (TF_XLA_FLAGS)"
    path = directory(environ)
    if path is None:
        return f"off ({ENV}={environ.get(ENV)})"
    problem = _unwritable(path)
    if problem is None:
        read_only = False
    elif path.is_dir() and any(path.glob("*.pb")):
        read_only = True
    else:
        return f"off ({problem})"
    if not read_only:
        prune(path.parent, _max_bytes(environ))
    added = f"{_DIRECTORY_FLAG}={path}" + f" {_READ_ONLY_FLAG}=true" * read_only
    environ["TF_XLA_FLAGS"] = f"{flags} {added}".strip()
    return f"read-only {path} ({problem})" if read_only else f"read-write {path}"


def prune(base: Path, max_bytes: int) -> int:
    """Deletes the least recently written entries (`*.pb`) under `base` until the entries
    there take at most `max_bytes`; returns how many it deleted. Entries that vanish or
    cannot be deleted meanwhile (another process, a read-only file) are skipped."""
    entries = []
    for entry in base.glob("*/*.pb"):
        try:
            info = entry.stat()
        except OSError:
            continue
        entries.append((info.st_mtime, info.st_size, entry))
    total, deleted = sum(size for _, size, _ in entries), 0
    for _, size, entry in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        try:
            entry.unlink()
        except OSError:
            continue
        total, deleted = total - size, deleted + 1
    return deleted


def _max_bytes(environ) -> int:
    """`KERAS_VAE_XLA_CACHE_MB` in bytes (the default where it is unset); a value that is not
    a non-negative number is one line naming it."""
    value = environ.get(SIZE_ENV, "").strip() or str(DEFAULT_MAX_MB)
    try:
        megabytes = float(value)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:
        raise ValueError(
            f"{SIZE_ENV}={value!r} is not a size in megabytes; set it to a number such as "
            f"{DEFAULT_MAX_MB}, or unset it."
        )
    return int(megabytes * 2**20)


def active(environ=os.environ) -> str | None:
    """The cache directory `TF_XLA_FLAGS` names, if any."""
    match = re.search(rf"{_DIRECTORY_FLAG}=(\S+)", environ.get("TF_XLA_FLAGS", ""))
    return match.group(1) if match else None


def describe_failure(error: BaseException, environ=os.environ) -> str | None:
    """One line for an error that names the active cache directory (None otherwise)."""
    path = active(environ)
    text = str(error).strip()
    if path is None or path not in text:
        return None
    first = text.splitlines()[0][:300]
    return (
        f"The XLA compilation cache in {path} failed ({type(error).__name__}: {first}). "
        f"Rerun with {ENV}=off, or free space / delete that directory."
    )


def _unwritable(path: Path) -> str | None:
    """Why `path` cannot take a cache entry now (None: it can)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
        free = os.statvfs(path)
    except OSError as error:
        return f"{path} is not writable: {error.strerror or error}"
    if free.f_bavail * free.f_frsize < MIN_FREE_BYTES:
        return f"less than {MIN_FREE_BYTES // 2**20} MB free in {path}"
    return None


def _tensorflow_version() -> str:
    try:
        return metadata.version("tensorflow")
    except metadata.PackageNotFoundError:  # tensorflow-cpu, tf-nightly, ...
        import tensorflow

        return tensorflow.__version__


def _cpu() -> str:
    """The CPU's model name and flags (Linux), else what `platform` knows."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    keys = ("model name", "flags", "Features", "CPU part")
    lines = [line for line in text.splitlines() if line.split(":")[0].strip() in keys]
    return "\n".join(dict.fromkeys(lines))
