"""The trainer's settings shared with itra-bench: each tower is one model spec
(``--image-tower`` / ``--text-tower``, as ``--teacher`` and ``itra-bench run --model`` take
it; the old three flags per tower, old settings-file keys and old checkpoints still read),
and ``--precision`` holds for the evaluation during training too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_data import TINY, digits_csv, train_run

from itra_bench.errors import UserError
from itra_train.config import as_dict, differences, from_dict, load_config
from itra_train.tower_specs import build_spec

BASE = ["--train-data", "x.csv"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """64 rows: two steps of 32."""
    return digits_csv(tmp_path_factory.mktemp("digits"), 64)


def _settings(*flags: str) -> dict:
    cfg, _ = load_config([*BASE, *flags])
    return as_dict(cfg)


def test_a_tower_is_one_model_spec_and_recorded_so():
    settings = _settings("--image-tower", "timm:resnet18@/w/r18.pt", "--text-tower",
                         "huggingface:/m/bert")
    assert settings["image_tower"] == "timm:resnet18@/w/r18.pt"
    assert settings["text_tower"] == "hf:/m/bert"  # the scheme's old spelling renamed
    from itra_train.tower_specs import OLD_KEYS

    assert not {k for keys in OLD_KEYS.values() for k in keys} & set(settings)


@pytest.mark.parametrize(("old", "new"), [
    (["--image-model", "itra-demo", "--text-model", "itra-demo"],
     ["--image-tower", "openclip:itra-demo", "--text-tower", "openclip:itra-demo"]),
    (["--image-model-builder", "timm", "--image-model", "resnet18", "--image-model-tag",
      "/w/r18.pt"], ["--image-tower", "timm:resnet18@/w/r18.pt"]),
    (["--image-model-builder", "torchhub", "--image-model", "me/repo:main",
      "--image-model-tag", "tiny"], ["--image-tower", "torchhub:me/repo:main:tiny"]),
    (["--text-model-builder", "huggingface", "--text-model", "/m/bert"],
     ["--text-tower", "hf:/m/bert"]),
    (["--image-model-builder", "colorhist", "--image-model", "16"],
     ["--image-tower", "colorhist:16"]),
], ids=["openclip", "timm", "torchhub", "huggingface", "plugin"])
def test_the_old_tower_flags_give_the_same_settings_with_one_note(old, new, capsys):
    capsys.readouterr()
    assert _settings(*new) == _settings(*old)
    err = capsys.readouterr().err
    assert err.count("deprecated") == 1, err
    assert f"{new[0]} {new[1]}" in " ".join(err.split())


def test_old_tower_flags_are_refused_beside_the_new_one_and_where_they_never_worked():
    with pytest.raises(UserError, match="give --image-tower or the deprecated --image-model, "
                                        "not both"):
        load_config([*BASE, "--image-tower", "openclip:RN50", "--image-model", "RN101"])
    with pytest.raises(UserError, match="--image-model-builder torchhub needs "
                                        "--image-model-tag"):
        load_config([*BASE, "--image-model-builder", "torchhub", "--image-model", "me/repo"])


def test_old_keys_of_a_settings_file_are_read_with_one_note(tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text("image_model_builder: timm\nimage_model: resnet18\nbatch_size: 8\n")
    capsys.readouterr()
    cfg, _ = load_config([*BASE, "--config", str(old)])
    err = " ".join(capsys.readouterr().err.split())
    assert cfg.image_tower == "timm:resnet18" and cfg.batch_size == 8
    assert err.count("deprecated") == 1 and "image_model_builder and image_model are" in err
    # A flag changes a part of the file's tower, as it did.
    cfg, _ = load_config([*BASE, "--config", str(old), "--image-model", "resnet50"])
    assert cfg.image_tower == "timm:resnet50"
    both = tmp_path / "both.yaml"
    both.write_text("image_tower: timm:resnet18\nimage_model: resnet50\n")
    with pytest.raises(UserError, match=f"{both}: give image_tower or the deprecated "
                                        "image_model, not both"):
        load_config([*BASE, "--config", str(both)])


def test_without_its_weights_a_tower_spec_reads_no_weights_file():
    assert build_spec("openclip:RN50@/w/rn50.pt", load_weights=False) == ("openclip", "RN50")
    assert build_spec("openclip:RN50@/w/rn50.pt", load_weights=True) == \
        ("openclip", "RN50@/w/rn50.pt")
    assert build_spec("torchhub:me/repo:main:tiny@/w/t.pt", load_weights=False) == \
        ("torchhub", "me/repo:main:tiny")
    assert build_spec("hf:/m/a@b", load_weights=False) == ("hf", "/m/a@b")


def _old_form(config: dict) -> dict:
    """``config`` as itra-train recorded it before the tower specs."""
    old = {k: v for k, v in config.items() if k not in ("image_tower", "text_tower")}
    for side in ("image", "text"):
        old.update({f"{side}_model_builder": "openclip", f"{side}_model": "itra-demo",
                    f"{side}_model_tag": ""})
    return old


def test_a_checkpoint_recording_the_old_tower_settings_loads_and_evaluates_alike(
        train, cli, data, tmp_path):
    assert train_run(train, data, tmp_path, "--epochs", "1").code == 0
    new = tmp_path / "run" / "checkpoints" / "epoch_1.pt"
    ckpt = torch.load(new, map_location="cpu", weights_only=True)
    assert ckpt["config"]["image_tower"] == "openclip:itra-demo"
    ckpt["config"] = _old_form(ckpt["config"])
    (tmp_path / "old").mkdir()
    old = tmp_path / "old" / "epoch_1.pt"
    torch.save(ckpt, old)

    cfg = from_dict(ckpt["config"])
    assert cfg.image_tower == cfg.text_tower == "openclip:itra-demo"
    # Resuming it with today's flags finds no difference.
    now, _ = load_config(["--train-data", str(data), *TINY, "--epochs", "1"])
    assert differences(ckpt["config"], now) == []

    scores = []
    for path, out in ((new, "new"), (old, "old")):
        res = cli("run", "--model", path, "--tasks", "digits-zeroshot", "--output",
                  tmp_path / out, "--workers", "0", "--no-progress", "--no-cache")
        assert res.code == 0, res
        assert "deprecated" not in res.err  # nothing the user could change
        record = json.loads(next((tmp_path / out).rglob("*.json")).read_text())
        scores.append(record["main_score_value"])
    assert scores[0] == scores[1]


def test_evaluation_during_training_runs_at_the_training_precision(train, data, tmp_path):
    res = train_run(train, data, tmp_path, "--epochs", "1", "--precision", "amp_bf16",
                    "--eval-tasks", "digits-zeroshot")
    assert res.code == 0, res
    results = list((tmp_path / "run" / "eval").rglob("*.json"))
    assert results, "no evaluation result was written"
    record = json.loads(results[0].read_text())
    assert record["task"] == "digits-zeroshot"
    assert record["config"]["precision"] == "amp_bf16"
