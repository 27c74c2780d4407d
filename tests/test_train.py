"""itra-train: checkpoints, evaluation of checkpoints, resume, watch, settings, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import readme_figures
import torch
from train_data import (
    TINY,
    assert_same_weights,
    digits_csv,
    epoch_records,
    interrupted_at_epoch,
    train_run,
)

from itra_train import checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """128 image-caption rows of digits (4 batches of 32)."""
    return digits_csv(tmp_path_factory.mktemp("digits"), 128)


def test_run_folder_and_checkpoint_contents(train, data, tmp_path):
    res = train_run(train, data, tmp_path, "--epochs", "2", "--save-frequency", "2")
    assert res.code == 0, res
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_2.pt",
                                                                        "epoch_latest.pt"]
    for name in ("out.log", "params.txt", "results.jsonl"):
        assert (run / name).is_file()
    assert any((run / "tensorboard").iterdir())
    log = (run / "out.log").read_text()
    assert "loss: " in log and "lr: " in log and "samples/s: " in log and "samples/s/proc: " in log
    assert "batch_size: 32" in (run / "params.txt").read_text()
    records = epoch_records(run)
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["step"] == 8
    ckpt = torch.load(run / "checkpoints" / "epoch_2.pt", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scaler", "rng", "epoch", "step", "config"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["config"]["image_tower"] == "openclip:itra-demo"
    assert ckpt["optimizer"]["state"], "optimizer moments are saved"


def test_checkpoint_evaluates_with_no_other_flag_and_watch_once(train, cli, data, tmp_path):
    assert train_run(train, data, tmp_path, "--epochs", "2").code == 0
    run = tmp_path / "run"
    res = cli("run", "--model", run / "checkpoints" / "epoch_2.pt", "--tasks", "digits-zeroshot",
              "--output", tmp_path / "results", "--workers", "0", "--no-progress")
    assert res.code == 0, res
    record = json.loads(next((tmp_path / "results").rglob("*.json")).read_text())
    assert record["task"] == "digits-zeroshot" and 0 <= record["main_score_value"] <= 1
    # The result names the plugins (and versions) of its model, task and training loss.
    providers = record["providers"]
    assert providers["model"]["plugin"] == "itra_train"
    assert providers["task"]["distribution"] == "itra-bench"
    assert providers["loss"]["name"] == "infonce" and providers["loss"]["plugin"] == "losses"
    assert providers["loss"]["version"]

    res = cli("watch", run, "--tasks", "digits-zeroshot", "--once", "--workers", "0")
    assert res.code == 0, res
    lines = (run / "evaluation_metrics_all.csv").read_text().splitlines()
    assert lines[0] == "epoch,checkpoint,digits-zeroshot/zeroshot/acc1"
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]
    # The epoch-2 row is the same number `itra-bench run` stored for that checkpoint.
    assert float(lines[2].split(",")[2]) == pytest.approx(record["main_score_value"], abs=1e-6)
    png = (run / "evaluation_metrics_all.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # A second pass evaluates nothing new.
    assert cli("watch", run, "--tasks", "digits-zeroshot", "--once").code == 0
    assert len((run / "evaluation_metrics_all.csv").read_text().splitlines()) == 3


def test_resume_reproduces_an_uninterrupted_run(train, data, tmp_path):
    assert train_run(train, data, tmp_path, "--epochs", "3", name="straight").code == 0

    with interrupted_at_epoch(1):
        assert train_run(train, data, tmp_path, "--epochs", "3", name="resumed").code == 130
    assert [r["epoch"] for r in epoch_records(tmp_path / "resumed")] == [1]
    res = train_run(train, data, tmp_path, "--epochs", "3", "--resume", "latest", name="resumed")
    assert res.code == 0, res

    straight, resumed = epoch_records(tmp_path / "straight"), epoch_records(tmp_path / "resumed")
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    for a, b in zip(straight, resumed, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["train_loss_last"] == b["train_loss_last"]
    wa = checkpoint.load(tmp_path / "straight" / "checkpoints" / "epoch_3.pt")["model"]
    wb = checkpoint.load(tmp_path / "resumed" / "checkpoints" / "epoch_3.pt")["model"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)


def test_accumulation_equals_the_large_batch(train, data, tmp_path):
    """Two accumulated batches of 32 are one contrastive batch of 64: same loss, same step."""
    assert train_run(train, data, tmp_path, "--epochs", "1", "--batch-size", "64",
                     name="big").code == 0
    assert train_run(train, data, tmp_path, "--epochs", "1", "--batch-size", "32",
                     "--accum-freq", "2", name="accum").code == 0
    big, accum = epoch_records(tmp_path / "big")[0], epoch_records(tmp_path / "accum")[0]
    assert big["step"] == accum["step"] == 2
    assert accum["train_loss"] == pytest.approx(big["train_loss"], rel=1e-5)
    wa = checkpoint.load(tmp_path / "big" / "checkpoints" / "epoch_1.pt")["model"]
    wb = checkpoint.load(tmp_path / "accum" / "checkpoints" / "epoch_1.pt")["model"]
    assert_same_weights(wa, wb, lr=2e-3, steps=2)


def test_yaml_config_with_flag_override(train, data, tmp_path):
    settings = tmp_path / "train.yaml"
    settings.write_text(f"train_data: {data}\nepochs: 1\nbatch_size: 64\nlr: 0.001\n"
                        f"logs: {tmp_path}\nname: fromfile\n")
    res = train("--config", settings, *TINY)  # TINY's --batch-size 32 overrides the file's 64
    assert res.code == 0, res
    params = (tmp_path / "fromfile" / "params.txt").read_text()
    assert "batch_size: 32" in params and "lr: 0.002" in params and "epochs: 1" in params
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    res = train("--config", bad, "--train-data", data)
    assert res.code == 2 and "bad.yaml" in res.err and "epoch" in res.err


def test_locked_image_tower_does_not_change(train, data, tmp_path):
    assert train_run(train, data, tmp_path, "--epochs", "1", "--lock-image", name="lit").code == 0
    ckpt = checkpoint.load(tmp_path / "lit" / "checkpoints" / "epoch_1.pt")
    from itra_bench.registry import load_registry
    from itra_train.config import from_dict
    from itra_train.towers import build_model

    init = build_model(from_dict(ckpt["config"]), load_registry()).state_dict()
    visual = [k for k in init if ".clip.visual." in k]
    text = [k for k in init if ".clip.transformer." in k]
    assert visual and text
    for key in visual:
        torch.testing.assert_close(ckpt["model"][key], init[key], rtol=0, atol=0)
    assert any(not torch.equal(ckpt["model"][k], init[k]) for k in text)


# -- bad input: one clear message each -----------------------------------------------------

def test_csv_missing_column_names_the_columns(train, data, tmp_path):
    res = train_run(train, data, tmp_path, "--csv-caption-key", "caption")
    assert res.code == 2
    assert "no column 'caption'" in res.err and "'filepath', 'title'" in res.err


def test_csv_missing_image_names_the_line(train, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("filepath\ttitle\nnope.png\ta digit\n")
    res = train_run(train, csv, tmp_path)
    assert res.code == 2 and "line 2" in res.err and "nope.png" in res.err


def test_empty_csv(train, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("filepath\ttitle\n")
    res = train_run(train, csv, tmp_path)
    assert res.code == 2 and "empty" in res.err


def test_unknown_loss_and_unfeedable_loss(train, data, tmp_path, monkeypatch):
    res = train_run(train, data, tmp_path, "--loss", "infonse")
    assert res.code == 2 and "unknown loss 'infonse'" in res.err and "infonce" in res.err
    res = train_run(train, data, tmp_path, "--loss", "needs-teacher", "--plugin",
                    "itra_test_plugin")
    assert res.code == 2 and "distils from a frozen teacher" in res.err and "--teacher" in res.err


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(train, data, tmp_path, monkeypatch):
    assert train_run(train, data, tmp_path, "--epochs", "2").code == 0
    latest = tmp_path / "run" / "checkpoints" / "epoch_latest.pt"
    before = latest.read_bytes()

    from itra_bench.plugins.losses.alignment import InfoNCE

    calls = {"n": 0}
    forward = InfoNCE.forward

    def nan_at_third_step(self, *args, **kwargs):
        calls["n"] += 1
        loss = forward(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(InfoNCE, "forward", nan_at_third_step)
    res = train_run(train, data, tmp_path, "--epochs", "3", "--resume", "latest")
    assert res.code == 2, res
    assert "loss is nan" in res.err and "epoch 3, step 11" in res.err
    assert str(latest) in res.err.replace("\n", "")
    assert latest.read_bytes() == before
    assert not (tmp_path / "run" / "checkpoints" / "epoch_3.pt").exists()


def test_resume_with_other_settings_names_them(train, data, tmp_path):
    assert train_run(train, data, tmp_path, "--epochs", "1").code == 0
    res = train_run(train, data, tmp_path, "--epochs", "2", "--lr", "1e-3", "--resume", "latest")
    assert res.code == 2
    assert "--lr: checkpoint 0.002, now 0.001" in res.err
    # A new run into an existing run folder must not overwrite its checkpoints.
    res = train_run(train, data, tmp_path, "--epochs", "1")
    assert res.code == 2 and "--resume latest" in res.err


def test_checkpoint_of_other_kind_is_refused(cli, tmp_path):
    weights = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, weights)
    res = cli("run", "--model", weights, "--tasks", "digits-zeroshot")
    assert res.code == 2 and "not an itra-train checkpoint" in res.err


def test_itra_bench_train_is_itra_train(cli, data, tmp_path):
    res = cli("train", "--train-data", data, "--logs", tmp_path, "--name", "via-bench", *TINY,
              "--epochs", "1")
    assert res.code == 0, res
    assert (tmp_path / "via-bench" / "checkpoints" / "epoch_1.pt").is_file()


@pytest.mark.slow
def test_demo_trains_and_zero_shot_is_far_above_chance(cli, tmp_path):
    """`itra-bench demo` from nothing: trains (about a minute), evaluates the held-out digits,
    and gives the figures the README and the docs quote (quick start, the demo, the `compare`
    example)."""
    res = cli("demo", "--output", tmp_path / "results", "--no-progress")
    assert res.code == 0, res
    records = {json.loads(p.read_text())["task"]: json.loads(p.read_text())
               for p in (tmp_path / "results").rglob("*.json")}
    zeroshot = records["digits-zeroshot"]["main_score_value"]
    assert zeroshot >= 0.5, zeroshot
    # `--model demo` is the same cached weights: no second training, same score.
    cache = Path(os.environ["ITRA_BENCH_DEMO_DIR"])
    stamp = (cache / "logs" / "demo" / "checkpoints" / "epoch_10.pt").stat().st_mtime_ns
    res = cli("run", "--model", "demo", "--tasks", "digits-zeroshot", "--output",
              tmp_path / "again", "--no-progress")
    assert res.code == 0, res
    again = json.loads(next((tmp_path / "again").rglob("*.json")).read_text())
    assert again["main_score_value"] == zeroshot
    assert (cache / "logs" / "demo" / "checkpoints" / "epoch_10.pt").stat().st_mtime_ns == stamp

    # The docs' comparison (docs/results/compare.md): epoch 2 against epoch 10 of the demo
    # run. Eight more epochs lift every digits task far beyond sampling noise, except
    # retrieval, which stays near chance (5 images per caption share a digit) for both.
    ckpts = cache / "logs" / "demo" / "checkpoints"
    res = cli("run", "--model", ckpts / "epoch_2.pt", "--model", ckpts / "epoch_10.pt",
              "--tasks", "demo", "--output", tmp_path / "epochs", "--no-progress")
    assert res.code == 0, res
    res = cli("compare", tmp_path / "epochs", "--models", "epoch_2.pt", "epoch_10.pt",
              "--format", "json")
    assert res.code == 0, res
    rows = {r["task"]: r for r in json.loads(res.out)}
    for task in ("digits-zeroshot", "digits-linear-probe", "digits-knn", "digits-clustering"):
        assert rows[task]["significant"] and rows[task]["low"] > 0, rows[task]
    assert not rows["digits-retrieval"]["significant"], rows["digits-retrieval"]
    assert rows["avg:demo (5 tasks)"]["low"] > 0

    # The README and the docs quote these very runs: exactly on the machine they name (torch
    # version, CPU, instruction set), within readme_figures.TOLERANCE points elsewhere.
    figures = readme_figures.parse()
    exact = figures.reference.is_this_machine()
    wrong = readme_figures.check(figures, records, rows, exact)
    assert not wrong, (
        f"The demo figures of the README and docs/ are not what the demo gives "
        f"({'exactly, on its ' if exact else 'within the tolerance, off its '}reference "
        f"machine {figures.reference}); run its commands and paste their output:\n  "
        + "\n  ".join(wrong))


def test_loss_needing_prototypes_or_teacher_is_refused_at_start(train, data, tmp_path):
    res = train_run(train, data, tmp_path, "--loss", "dino")
    assert res.code == 2 and "--prototypes N" in res.err, res
    res = train_run(train, data, tmp_path, "--teacher", "demo:random")
    assert res.code == 2 and "--distill-image" in res.err
    res = train_run(train, data, tmp_path, "--adapter", "compacter")
    assert res.code == 2 and "lora" in res.err and "prefix_tuning" in res.err


def test_cached_teacher_features_train_like_the_live_teacher(train, data, tmp_path):
    """--cache-teacher encodes the training set once; with no augmentation the run is the
    same as encoding with the teacher at every step."""
    kd = ["--epochs", "1", "--teacher", "demo:random", "--distill-image", "image",
          "--distill-text", "text", "--loss", "simreg"]
    assert train_run(train, data, tmp_path, *kd, name="live").code == 0
    res = train_run(train, data, tmp_path, *kd, "--cache-teacher", "--cache-dir",
                    tmp_path / "cache", name="cached")
    assert res.code == 0, res
    live, cached = epoch_records(tmp_path / "live")[0], epoch_records(tmp_path / "cached")[0]
    for key in ("train_loss", "train/image", "train/text"):
        assert cached[key] == pytest.approx(live[key], rel=1e-4), key


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["amp_bf16", "amp_fp16", "amp"])
def test_mixed_precision_training_on_cuda(train, cli, data, tmp_path, precision):
    """CUDA with autocast (bf16, or fp16 with the gradient scaler; `amp` is fp16's old name):
    finite losses, a checkpoint with the scaler's state, and it evaluates."""
    settings = [a if a != "cpu" else "cuda" for a in TINY]
    settings = [a if a != "fp32" else precision for a in settings]
    res = train("--train-data", data, "--logs", tmp_path, "--name", precision, *settings,
                "--epochs", "2")
    assert res.code == 0, res
    records = epoch_records(tmp_path / precision)
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in records)
    ckpt = checkpoint.load(tmp_path / precision / "checkpoints" / "epoch_2.pt")
    assert bool(ckpt["scaler"]) == (precision in ("amp_fp16", "amp"))
    assert ckpt["config"]["precision"] == {"amp": "amp_fp16"}.get(precision, precision)
    res = cli("run", "--model", tmp_path / precision / "checkpoints" / "epoch_2.pt", "--tasks",
              "digits-zeroshot", "--device", "cuda", "--output", tmp_path / "r", "--workers", "0")
    assert res.code == 0, res
