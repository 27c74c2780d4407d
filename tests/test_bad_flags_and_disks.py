"""Flags that cannot work, and folders that cannot be written (read-only, a full disk), are
refused with one message naming the flag or folder (exit 2), never a traceback."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_cli_run import run_args
from train_data import TINY, digits_csv, train_run

PIXEL = ("--plugin", "itra_test_plugin")


def assert_user_error(res, *phrases: str) -> None:
    """Exit 2, one message holding each of ``phrases``, no traceback."""
    assert res.code == 2, res
    assert "Traceback" not in res.err, res
    for phrase in phrases:
        assert phrase in res.err, res


# -- --pretrained ---------------------------------------------------------------------------


def test_pretrained_file_that_does_not_exist_is_refused(cli, tmp_path):
    missing = tmp_path / "nonexistent.pt"
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn", "--pretrained", missing))
    assert_user_error(res, "--pretrained", str(missing))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.json"))


@pytest.mark.parametrize("model", ["pixel", "demo:random"])
def test_pretrained_for_a_builder_that_ignores_it_is_refused(cli, tmp_path, model):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not used")
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn", "--pretrained", weights,
                        model=model))
    assert_user_error(res, "--pretrained", model.split(":")[0], "does not")


# -- numeric flags --------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "value", "allowed"), [
    ("--dist-timeout", "-1", "above 0"), ("--dist-timeout", "nan", "above 0"),
    ("--dist-timeout", "inf", "above 0"), ("--batch-size", "0", "at least 1"),
    ("--workers", "-1", "at least 0"), ("--seed", "-3", "from 0"),
    ("--resamples", "-1", "at least 0"), ("--cache-chunk-rows", "0", "at least 1"),
    ("--batch-size", "2.5", "integer"), ("--max-passages", "0", "at least 1"),
    ("--seeds", "0,-2", "from 0"),
])
def test_run_refuses_numeric_flags_out_of_range(cli, tmp_path, flag, value, allowed):
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn", flag, value))
    assert_user_error(res, flag, allowed)


@pytest.mark.parametrize(("flag", "value"), [("--resamples", "0"), ("--seed", "-1")])
def test_compare_refuses_numeric_flags_out_of_range(cli, tmp_path, flag, value):
    res = cli("compare", tmp_path, "--models", "a", "b", flag, value)
    assert_user_error(res, flag)


@pytest.mark.parametrize(("flag", "value"), [("--interval", "-1"), ("--idle", "nan"),
                                           ("--dist-timeout", "0"), ("--batch-size", "0")])
def test_watch_refuses_numeric_flags_out_of_range(cli, tmp_path, flag, value):
    res = cli("watch", tmp_path, "--tasks", "digits-knn", flag, value)
    assert_user_error(res, flag)


@pytest.mark.parametrize(("flag", "value"), [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--wd", "nan"), ("--epochs", "0"),
    ("--beta1", "1.5"), ("--eps", "-1e-8"), ("--warmup", "-1"), ("--workers", "-2"),
    ("--batch-size", "0"), ("--seed", "-1"), ("--grad-clip-norm", "inf"),
])
def test_train_refuses_numeric_flags_out_of_range(train, tmp_path, flag, value):
    data = digits_csv(tmp_path / "data", 64)
    res = train_run(train, data, tmp_path / "logs", flag, value)
    assert_user_error(res, flag)
    assert not (tmp_path / "logs").exists()


def test_train_refuses_a_yaml_setting_out_of_range(train, tmp_path):
    data = digits_csv(tmp_path / "data", 64)
    config = tmp_path / "settings.yaml"
    config.write_text("beta2: .nan\n")
    res = train_run(train, data, tmp_path / "logs", "--config", config)
    assert_user_error(res, "--beta2", "nan")


# -- precision: one rule for both CLIs ------------------------------------------------------


def test_train_refuses_amp_fp16_on_cpu_as_run_does(cli, train, tmp_path):
    data = digits_csv(tmp_path / "data", 64)
    ran = cli(*run_args(tmp_path, "--tasks", "digits-knn", "--device", "cpu",
                        "--precision", "amp_fp16"))
    assert_user_error(ran, "amp_fp16")
    trained = train("--train-data", data, "--logs", tmp_path / "logs", "--name", "run",
                    *TINY, "--precision", "amp_fp16")
    assert_user_error(trained, "amp_fp16")
    assert trained.err.split("error:")[-1] == ran.err.split("error:")[-1]


# -- a full or read-only disk ---------------------------------------------------------------


def test_full_cache_disk_is_an_environment_error_naming_the_cache(cli, tmp_path):
    # A first run computes digits-knn without the cache; the second, whose files may not
    # grow past 16 KiB (as on a full disk), fails writing the cache: that result is kept.
    assert cli(*run_args(tmp_path, "--tasks", "digits-knn", "--no-cache")).code == 0
    kept = next((tmp_path / "out").rglob("knn.json"))
    before = kept.read_text()
    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent / "helpers")!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
        from itra_bench.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    args = [str(a) for a in run_args(tmp_path, "--tasks", "digits-knn,digits-clustering")]
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=300,
                          env={**__import__("os").environ, "COLUMNS": "400"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "plugin bug" not in proc.stderr
    assert f"--cache-dir {tmp_path / 'cache'}" in proc.stderr
    assert kept.read_text() == before


def test_cache_write_failure_that_is_no_disk_error_stays_a_plugin_bug(tmp_path):
    # torch.save of something it cannot pickle is a RuntimeError of another kind: not the
    # disk's fault, so not turned into an OSError.
    from itra_bench.atomic_io import atomic_torch_save

    with pytest.raises(Exception) as info:
        atomic_torch_save({"f": lambda: 0}, tmp_path / "x.pt")
    assert not isinstance(info.value, OSError)


@pytest.fixture
def results_folder(cli, tmp_path) -> Path:
    assert cli(*run_args(tmp_path, "--tasks", "digits-knn", "--no-cache")).code == 0
    return tmp_path / "out"


def test_results_output_under_a_file_names_the_folder(cli, tmp_path, results_folder):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "board"
    res = cli("results", results_folder, "--output", out)
    assert_user_error(res, f"--output {out}")


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_results_output_read_only_or_full_names_the_folder(cli, tmp_path, monkeypatch,
                                                        results_folder, code):
    import itra_bench.atomic_io as atomic_io

    def refuse(path, write):
        raise OSError(code, __import__("os").strerror(code), str(path))

    monkeypatch.setattr(atomic_io, "atomic_write", refuse)
    res = cli("results", results_folder, "--output", tmp_path / "board")
    assert_user_error(res, f"--output {tmp_path / 'board'}")


def test_train_logs_under_a_file_names_the_folder(train, tmp_path):
    data = digits_csv(tmp_path / "data", 64)
    (tmp_path / "file").write_text("")
    res = train_run(train, data, tmp_path / "file")
    assert_user_error(res, f"--logs {tmp_path / 'file'}")


def test_train_logs_full_while_taking_the_lock_names_the_folder(train, tmp_path, monkeypatch):
    import itra_train.run_folder as run_folder

    class FullDisk:
        def __init__(self, *args, **kwargs) -> None:
            self.handle = open(*args, **kwargs)  # noqa: SIM115

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def fileno(self) -> int:
            return self.handle.fileno()

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_folder, "open", FullDisk, raising=False)
    data = digits_csv(tmp_path / "data", 64)
    res = train_run(train, data, tmp_path / "logs")
    assert_user_error(res, f"--logs {tmp_path / 'logs'}", "No space left")
