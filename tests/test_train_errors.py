"""Bad training input ends in one message naming the file, line or flag (exit 2, no
traceback), and an interrupted or concurrent run loses nothing."""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from train_data import digits_csv, epoch_records, train_run

from itra_bench.errors import UserError

ONE_EPOCH = ["--epochs", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """64 rows: two steps of 32."""
    return digits_csv(tmp_path_factory.mktemp("digits"), 64)


def _one_error(res) -> str:
    """The run's single error line (the trainer's log lines may precede it)."""
    assert res.code == 2, res
    assert "Traceback" not in res.err and "Original Traceback" not in res.err, res
    errors = [line for line in res.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res
    return errors[0]


def _csv_with(data: Path, folder: Path, line: int, image: Path) -> Path:
    """``data``'s rows with the image of CSV line ``line`` replaced by ``image``."""
    lines = data.read_text().splitlines()
    base = data.parent
    rows = [lines[0]] + [f"{base / row.split(chr(9))[0]}\t{row.split(chr(9))[1]}"
                         for row in lines[1:]]
    rows[line - 1] = f"{image}\t{rows[line - 1].split(chr(9))[1]}"
    out = folder / "train.csv"
    out.write_text("\n".join(rows) + "\n")
    return out


# -- devices ------------------------------------------------------------------------------------

def test_unknown_device_is_refused_by_train_and_run(train, cli, data, tmp_path):
    message = _one_error(train_run(train, data, tmp_path, *ONE_EPOCH, "--device", "tpu"))
    assert "--device tpu" in message and "auto | cpu | cuda[:N] | mps" in message
    res = cli("run", "--model", "demo:random", "--tasks", "digits-zeroshot", "--device", "tpu",
              "--output", tmp_path / "out", "--workers", "0", "--no-progress")
    assert res.code == 2 and "auto | cpu | cuda[:N] | mps" in res.err, res
    assert "Traceback" not in res.err


# -- images -------------------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [1500, 2500], ids=["bomb-error", "bomb-warning"])
def test_decompression_bomb_names_the_file_and_line(train, data, tmp_path, monkeypatch, limit):
    # The digits are 32x32 (1024 pixels); the 64x64 image (4096) is over PIL's error limit
    # (twice MAX_IMAGE_PIXELS) at 1500 and only over its warning limit at 2500.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    big = tmp_path / "big.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(big)
    csv = _csv_with(data, tmp_path, 7, big)
    message = _one_error(train_run(train, csv, tmp_path / "logs", *ONE_EPOCH))
    assert f"{csv}, line 7" in message and str(big) in message
    assert "decompression bomb" in message


def test_corrupt_image_with_workers_is_one_line(train, data, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    csv = _csv_with(data, tmp_path, 5, bad)
    res = train_run(train, csv, tmp_path / "logs", *ONE_EPOCH, "--workers", "1")
    message = _one_error(res)
    assert f"{csv}, line 5" in message and str(bad) in message
    assert "DataLoader" not in res.err


# -- models and weights -------------------------------------------------------------------------

def test_missing_teacher_file_says_it_does_not_exist(train, data, tmp_path):
    missing = tmp_path / "missing.pt"
    message = _one_error(train_run(train, data, tmp_path, *ONE_EPOCH, "--teacher", missing,
                                   "--distill-image", "image"))
    assert f"--teacher {missing}" in message and "does not exist" in message
    assert "Did you mean" not in message


def _torchscript_lookalike(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/code/__torch__.py", "def forward(self): pass\n")
        zf.writestr("archive/data.pkl", b"not a pickle")
    return path


def test_torchscript_lookalike_weights_are_refused(cli, tmp_path):
    from itra_bench.weights import load_state_dict_file

    fake = _torchscript_lookalike(tmp_path / "fake.pt")
    with pytest.raises(UserError, match="TorchScript"):
        load_state_dict_file(fake)
    res = cli("run", "--model", "openclip:itra-demo", "--pretrained", fake, "--tasks",
              "digits-zeroshot", "--output", tmp_path / "out", "--workers", "0", "--no-progress")
    assert res.code == 2 and str(fake) in res.err and "TorchScript" in res.err, res
    assert "Traceback" not in res.err


def _pickled_code(path: Path) -> Path:
    torch.save({"format": "itra-train/1", "config": {}, "model": argparse.Namespace(a=1)}, path)
    return path


def test_refused_checkpoint_does_not_advise_weights_only_false(train, cli, data, tmp_path):
    from itra_bench.weights import load_state_dict_file
    from itra_train import checkpoint

    unsafe = _pickled_code(tmp_path / "unsafe.pt")
    for load in (checkpoint.load, load_state_dict_file):
        with pytest.raises(UserError) as err:
            load(unsafe)
        assert str(unsafe) in str(err.value) and "argparse.Namespace" in str(err.value)
        assert "weights_only=False" not in str(err.value)
        assert "add_safe_globals" not in str(err.value)
    res = cli("run", "--model", unsafe, "--tasks", "digits-zeroshot", "--output",
              tmp_path / "out", "--workers", "0", "--no-progress")
    assert res.code == 2 and "weights_only=False" not in res.err, res
    message = _one_error(train_run(train, data, tmp_path, *ONE_EPOCH, "--resume", unsafe))
    assert str(unsafe) in message and "weights_only=False" not in message


# -- the run folder -----------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from pathlib import Path
from itra_train.run_folder import RunFolder
folder = RunFolder(Path(sys.argv[1]), True)
print("locked", flush=True)
time.sleep(120)
"""


def test_second_run_on_the_same_folder_is_refused(train, data, tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        message = _one_error(train_run(train, data, tmp_path, *ONE_EPOCH))
        assert str(folder) in message and f"pid {holder.pid}" in message
    finally:
        holder.kill()
        holder.wait()
    # Once the other run is gone the folder is free again.
    assert train_run(train, data, tmp_path, *ONE_EPOCH).code == 0


def test_resume_rebuilds_the_results_line_a_kill_lost(train, data, tmp_path, monkeypatch):
    from itra_train.run_folder import RunFolder

    append = RunFolder.append_result

    def killed_after_checkpoint(self, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # the checkpoint of epoch 2 is written, its line is not
        append(self, record)

    monkeypatch.setattr(RunFolder, "append_result", killed_after_checkpoint)
    assert train_run(train, data, tmp_path, "--epochs", "3").code == 130
    run = tmp_path / "run"
    assert [r["epoch"] for r in epoch_records(run)] == [1]
    # A write killed half-way leaves its temp file behind.
    leftovers = [run / ".results.jsonl.abc123.tmp", run / "checkpoints" / ".epoch_3.pt.x1.tmp"]
    for path in leftovers:
        path.write_bytes(b"partial")

    monkeypatch.setattr(RunFolder, "append_result", append)
    res = train_run(train, data, tmp_path, "--epochs", "3", "--resume", "latest")
    assert res.code == 0, res
    records = epoch_records(run)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    saved = torch.load(run / "checkpoints" / "epoch_3.pt", map_location="cpu", weights_only=True)
    assert records[1] == saved["history"][1]
    assert not any(path.exists() for path in leftovers)
