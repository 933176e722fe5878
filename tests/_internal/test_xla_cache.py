"""keras_vae._internal.xla_cache: the `keras-vae` command's persistent XLA compilation cache,
keyed by TensorFlow, CPU and XLA_FLAGS, and never one that could fail the training step."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tensorflow as tf
from helpers import REPO

from keras_vae._internal import xla_cache


def test_a_writable_directory_is_used_read_write_and_keyed_by_tensorflow_cpu_and_flags(
    tmp_path, monkeypatch
):
    environ = {xla_cache.ENV: str(tmp_path), "TF_XLA_FLAGS": "--tf_xla_auto_jit=0"}
    state = xla_cache.configure(environ)
    path = xla_cache.directory(environ)
    assert state == f"read-write {path}" and path.parent == tmp_path and path.is_dir()
    assert path.name.startswith(f"tf{tf.__version__}-")
    assert environ["TF_XLA_FLAGS"] == (
        f"--tf_xla_auto_jit=0 --tf_xla_persistent_cache_directory={path}"
    )
    assert xla_cache.active(environ) == str(path)
    others = {xla_cache.directory({**environ, "XLA_FLAGS": "--xla_cpu_enable_fast_math=true"}),
              xla_cache.directory({**environ, "TF_ENABLE_ONEDNN_OPTS": "0"})}  # fmt: skip
    monkeypatch.setattr(xla_cache, "_tensorflow_version", lambda: "2.99.0")
    others.add(xla_cache.directory(environ))
    monkeypatch.setattr(xla_cache, "_cpu", lambda: "model name : another CPU")
    others.add(xla_cache.directory(environ))
    assert len(others | {path}) == 5  # each fact gets its own directory


def test_off_and_the_users_own_cache_are_left_alone(tmp_path):
    for value in ("off", "0", "false"):
        environ = {xla_cache.ENV: value}
        assert xla_cache.configure(environ).startswith("off")
        assert "TF_XLA_FLAGS" not in environ
    flags = f"--tf_xla_persistent_cache_directory={tmp_path}"
    environ = {xla_cache.ENV: str(tmp_path / "ours"), "TF_XLA_FLAGS": flags}
    assert xla_cache.configure(environ) == "the user's (TF_XLA_FLAGS)"
    assert environ["TF_XLA_FLAGS"] == flags and not (tmp_path / "ours").exists()
    home = xla_cache.root({"XDG_CACHE_HOME": str(tmp_path)})
    assert home == tmp_path / "keras_vae" / "xla"


def test_an_unwritable_or_full_disk_never_reaches_tensorflow(tmp_path, monkeypatch):
    """TensorFlow fails the training step when it cannot write an entry (measured: a
    FailedPreconditionError for a path under a file, a ResourceExhaustedError on a full
    tmpfs), so such a directory is used read-only when it holds entries, else not at all."""
    (tmp_path / "a_file").write_text("")
    environ = {xla_cache.ENV: str(tmp_path / "a_file" / "xla")}
    assert xla_cache.configure(environ).startswith("off (")
    assert "TF_XLA_FLAGS" not in environ
    monkeypatch.setattr(xla_cache, "MIN_FREE_BYTES", 2**62)  # a full disk
    environ = {xla_cache.ENV: str(tmp_path / "cache")}
    assert "MB free" in xla_cache.configure(environ) and "TF_XLA_FLAGS" not in environ
    (xla_cache.directory(environ) / "xla_compile_cache__1__2__XLA_CPU_JIT.pb").write_bytes(b"")
    assert xla_cache.configure(environ).startswith("read-only ")
    assert environ["TF_XLA_FLAGS"].endswith(" --tf_xla_persistent_cache_read_only=true")


def test_an_error_naming_the_cache_is_one_line_that_says_how_to_turn_it_off(tmp_path):
    environ = {"TF_XLA_FLAGS": f"--tf_xla_persistent_cache_directory={tmp_path}"}
    error = tf.errors.ResourceExhaustedError(
        None, None, f"{tmp_path}/xla_compile_cache__1.pb.tmp; No space left on device\nmore"
    )
    line = xla_cache.describe_failure(error, environ)
    assert line.startswith(f"The XLA compilation cache in {tmp_path} failed (")
    assert "KERAS_VAE_XLA_CACHE=off" in line and "\n" not in line
    assert xla_cache.describe_failure(ValueError("other"), environ) is None
    assert xla_cache.describe_failure(error, {}) is None


@pytest.mark.skipif(sys.platform != "linux", reason="TensorFlow's XLA cache flags, Linux CI")
def test_the_commands_imports_leave_the_flags_to_be_read_at_the_first_compilation(tmp_path):
    """The CLI sets TF_XLA_FLAGS after its imports (TensorFlow is imported by then): the
    flags must still be unread, else the cache is silently off."""
    script = (
        "from keras_vae.cli import commands\n"
        "from keras_vae._internal import xla_cache\n"
        "print(xla_cache.configure())\n"
        "import tensorflow as tf\n"
        "print(tf.function(lambda x: x * 2, jit_compile=True)(tf.ones(3)).numpy())\n"
    )
    env = {**os.environ, xla_cache.ENV: str(tmp_path), "PYTHONPATH": str(REPO)}
    env.pop("TF_XLA_FLAGS", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "read-write" in done.stdout
    assert len(list(tmp_path.glob("*/xla_compile_cache__*.pb"))) == 1


def test_keras_vae_train_configures_the_cache_before_it_trains(tmp_path, monkeypatch):
    from keras_vae.cli import commands as cli

    class Configured(Exception):
        pass

    def configure(environ=os.environ):
        raise Configured  # stops the command there

    monkeypatch.setattr(xla_cache, "configure", configure)
    with pytest.raises(Configured):
        cli.main(["train", "--output", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
    assert cli.main(["sample", str(tmp_path / "missing"), "--output", "x.png"]) == 2  # not here


def _entry(path, size: int, age: int):
    """A cache entry of `size` bytes written `age` seconds before a fixed instant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    os.utime(path, (1_000_000 - age, 1_000_000 - age))
    return path


def test_prune_deletes_the_oldest_entries_of_every_version_until_the_bound_holds(tmp_path):
    old_tf = _entry(tmp_path / "tf2.20.0-aaa" / "xla_compile_cache__1__2__XLA_CPU_JIT.pb", 400, 300)
    older = _entry(tmp_path / "tf2.21.0-bbb" / "xla_compile_cache__3__4__XLA_CPU_JIT.pb", 300, 200)
    newer = _entry(tmp_path / "tf2.21.0-bbb" / "xla_compile_cache__5__6__XLA_CPU_JIT.pb", 300, 100)
    newest = _entry(tmp_path / "tf2.21.0-bbb" / "xla_compile_cache__7__8__XLA_CPU_JIT.pb", 300, 0)
    other = _entry(tmp_path / "tf2.21.0-bbb" / "notes.txt", 5000, 1000)  # not an entry
    assert xla_cache.prune(tmp_path, 1300) == 0  # 1,300 bytes of entries: within the bound
    assert xla_cache.prune(tmp_path, 700) == 2  # 1,300 -> 900 -> 600
    assert [p.exists() for p in (old_tf, older, newer, newest, other)] == [
        False, False, True, True, True
    ]  # fmt: skip
    assert xla_cache.prune(tmp_path, 0) == 2 and not any(tmp_path.glob("*/*.pb"))


def test_a_read_write_start_prunes_to_the_configured_size(tmp_path):
    environ = {xla_cache.ENV: str(tmp_path), xla_cache.SIZE_ENV: "0.001"}  # 1,048 bytes
    stale = _entry(tmp_path / "tf0.0.0-old" / "xla_compile_cache__1__XLA_CPU_JIT.pb", 2000, 9)
    assert xla_cache.configure(environ).startswith("read-write ")
    assert not stale.exists()
    kept = _entry(tmp_path / "tf0.0.0-old" / "xla_compile_cache__2__XLA_CPU_JIT.pb", 1000, 9)
    xla_cache.configure({xla_cache.ENV: str(tmp_path)})  # the default bound: 512 MB
    assert kept.exists()


@pytest.mark.parametrize("value", ["lots", "-5", "nan"])
def test_a_bad_size_setting_is_one_line_naming_it(tmp_path, monkeypatch, capsys, value):
    from keras_vae.cli import commands as cli

    monkeypatch.setenv(xla_cache.ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(xla_cache.SIZE_ENV, value)
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    assert cli.main(["train", "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        f"keras-vae train: error: {xla_cache.SIZE_ENV}={value!r} is not a size in megabytes; "
        "set it to a number such as 512, or unset it."
    ]
    assert not (tmp_path / "run").exists()
