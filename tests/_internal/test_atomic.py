"""keras_vae._internal.atomic: old-or-new files, durable directory entries, full disks,
checksums."""

import errno
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from keras_vae._internal import atomic

ATOMIC_SOURCE = Path(atomic.__file__)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_write_replaces_the_file_and_fsyncs_the_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", recording_fsync)
    path = tmp_path / "metrics.json"
    atomic.write_json(path, {"elbo": -90.0})
    assert path.read_text() == '{\n  "elbo": -90.0\n}\n'
    assert synced == [False, True]  # the data, then the directory entry of the rename
    synced.clear()
    with atomic.atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.name.endswith("model.keras") and tmp.name.startswith(".")
        tmp.write_bytes(b"weights")
    assert synced == [False, True]
    assert (tmp_path / "model.keras").read_bytes() == b"weights"
    assert _names(tmp_path) == ["metrics.json", "model.keras"]


class _FullDiskHandle:
    """Stands for a file on a full disk: the write call fails with ENOSPC."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        self.handle.write(data[: len(data) // 2])  # part of it reached the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_at_the_write_call_keeps_the_old_file(tmp_path):
    path = tmp_path / "history.csv"
    atomic.write_text(path, "epoch,loss\n0,1.0\n")
    with pytest.raises(atomic.DiskFullError) as caught:
        with atomic.atomic_file(path) as handle:
            _FullDiskHandle(handle).write(b"epoch,loss\n0,1.0\n1,0.5\n")
    error = caught.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert error.filename == str(path) and 0 < error.free <= shutil.disk_usage(tmp_path).total
    assert path.read_text() == "epoch,loss\n0,1.0\n"
    assert _names(tmp_path) == ["history.csv"]  # no temporary file left


def test_a_library_error_that_says_disk_full_becomes_disk_full_error(tmp_path):
    # h5py and TensorFlow report ENOSPC in their message, not in errno
    h5py_like = RuntimeError("Unable to write data (file write failed: No space left on device)")
    with pytest.raises(atomic.DiskFullError, match="No space left on the disk"):
        with atomic.atomic_path(tmp_path / "epoch-00001.weights.h5") as tmp:
            tmp.write_bytes(b"partial")
            raise h5py_like
    assert _names(tmp_path) == []
    assert atomic.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not atomic.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(ValueError, match="not full"):  # other errors pass through unchanged
        with atomic.atomic_file(tmp_path / "x"):
            raise ValueError("not full")


def test_sha256_and_sizes_against_hashlib(tmp_path):
    data = os.urandom(3 << 20)  # more than one read block
    (tmp_path / "blob").write_bytes(data)
    assert atomic.sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    assert [atomic.format_bytes(n) for n in (512, 1536, 5 * 2**30)] == ["512 B", "1.5 KB", "5.0 GB"]
    usage = shutil.disk_usage(tmp_path)
    assert 0 < atomic.free_bytes(tmp_path / "not" / "yet") <= usage.total


_ON_A_SMALL_DISK = """
import importlib.util, os, subprocess, sys
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", sys.argv[2]], check=True)
spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
atomic = importlib.util.module_from_spec(spec); spec.loader.exec_module(atomic)
path = os.path.join(sys.argv[2], "backup.weights.h5")
atomic.write_bytes(path, b"old" * 1000)
try:
    atomic.write_bytes(path, os.urandom(200_000))
except atomic.DiskFullError as error:
    left = sorted(os.listdir(sys.argv[2]))
    print(error.errno, error.filename == path, open(path, "rb").read() == b"old" * 1000, left)
"""


def test_a_real_full_disk_keeps_the_old_file(tmp_path):
    """A 64 KB tmpfs mounted in a private mount namespace (skipped where not permitted)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare: cannot make a small filesystem")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", _ON_A_SMALL_DISK, ATOMIC_SOURCE, mount_point],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if result.returncode != 0 and "mount" in result.stderr + result.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip().splitlines()[-1:]}")
    assert result.stdout.split() == [str(errno.ENOSPC), "True", "True", "['backup.weights.h5']"]
