"""One plugin contract for evaluation and training: whatever a plugin provides (a model
builder, a loss) itra-train trains with, under the names and options evaluation uses."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from train_data import digits_csv, epoch_records, train_run

from itra_bench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "itra-bench-example-plugin"
PLUGIN = ["--plugin", "itra_bench_example_plugin.plugin"]
ONE_EPOCH = ["--epochs", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """64 rows: two steps of 32."""
    return digits_csv(tmp_path_factory.mktemp("digits"), 64)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example plugin importable from its source folder (as --plugin finds modules)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))


# -- model builders of plugins ------------------------------------------------------------------

def test_plugin_model_builder_trains_as_image_tower_and_its_checkpoint_evaluates(
        train, cli, data, tmp_path, example):
    res = train_run(train, data, tmp_path, *PLUGIN, "--image-tower", "colorhist:16")
    assert res.code == 0, res
    ckpt = tmp_path / "run" / "checkpoints" / "epoch_1.pt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["config"]["image_tower"] == "colorhist:16"
    # 3 * 16 histogram bins joined to the text tower by a linear head.
    assert saved["model"]["image_head.weight"].shape[1] == 48
    assert epoch_records(tmp_path / "run")[0]["step"] == 2

    # The checkpoint names the plugin module that built its tower, for the message only: a
    # checkpoint never causes an import, so the module that is not installed comes with
    # --plugin, as it did for training.
    res = cli("run", "--model", ckpt, "--tasks", "digits-zeroshot", "--output",
              tmp_path / "results", "--workers", "0", "--no-progress")
    assert res.code == 2 and f"--plugin {PLUGIN[1]}" in res.err.replace("\n", ""), res
    res = cli("run", "--model", ckpt, *PLUGIN, "--tasks", "digits-zeroshot", "--output",
              tmp_path / "results", "--workers", "0", "--no-progress")
    assert res.code == 0, res
    record = json.loads(next((tmp_path / "results").rglob("*.json")).read_text())
    assert record["task"] == "digits-zeroshot" and 0 <= record["main_score_value"] <= 1


def test_unknown_builder_suggests_the_plugin_scheme(train, data, tmp_path, example):
    res = train_run(train, data, tmp_path, *PLUGIN, "--image-tower", "colorhits:16")
    assert res.code == 2, res
    assert "--image-tower colorhits:16" in res.err and "'colorhist'" in res.err
    assert "Traceback" not in res.err
    assert not (tmp_path / "run").exists()

    res = train_run(train, data, tmp_path, "--image-tower", "torchvison:resnet18")
    assert res.code == 2 and "'torchvision'" in res.err, res


def test_builder_and_precision_aliases_are_normalised():
    from itra_train.config import differences, from_dict, load_config

    cfg, _ = load_config(["--train-data", "x.csv", "--text-tower", "huggingface:/m/bert",
                          "--precision", "amp"])
    assert cfg.text_tower == "hf:/m/bert" and cfg.precision == "amp_fp16"
    # A checkpoint written under the old names resumes without a spurious difference.
    old = {**dict(cfg), "text_tower": "huggingface:/m/bert", "precision": "amp"}
    assert differences(old, cfg) == []
    assert from_dict(old).precision == "amp_fp16"
    assert from_dict(old).text_tower == "hf:/m/bert"


def test_unknown_precision_names_the_choices(train, data, tmp_path):
    res = train_run(train, data, tmp_path, "--precision", "amp_fp61")
    assert res.code == 2 and "--precision" in res.err and "'amp_fp16'" in res.err, res


# -- losses of plugins ------------------------------------------------------------------------

def test_example_plugin_loss_trains(train, data, tmp_path, example):
    res = train_run(train, data, tmp_path, *PLUGIN, "--loss", "example-cosine")
    assert res.code == 0, res
    record = epoch_records(tmp_path / "run")[0]
    assert record["epoch"] == 1 and torch.isfinite(torch.tensor(record["train_loss"]))
    assert (tmp_path / "run" / "checkpoints" / "epoch_1.pt").is_file()


def test_itra_train_imports_no_plugin_internals():
    offenders = []
    for path in sorted((ROOT / "itra_train").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}: {n}" for n in names
                          if n.startswith("itra_bench.plugins")]
    assert offenders == []


@pytest.mark.parametrize(("loss", "option", "suggestion"), [
    ("seed", "queue_sise=10", "'queue_size'"),
    ("protoclip", "episode_sise=8", "'episode_size'"),
])
def test_misspelled_loss_option_is_refused_with_the_close_match(train, data, tmp_path, loss,
                                                                option, suggestion):
    res = train_run(train, data, tmp_path, "--loss", loss, "--loss-options", option)
    assert res.code == 2, res
    assert "--loss-options" in res.err and option.split("=")[0] in res.err
    assert suggestion in res.err
    assert not (tmp_path / "run").exists()


def test_loss_without_options_refuses_any(train, data, tmp_path):
    res = train_run(train, data, tmp_path, "--loss-options", "temperature=0.1")
    assert res.code == 2 and "infonce" in res.err and "temperature" in res.err, res
    res = train_run(train, data, tmp_path, "--loss", "seed", "--loss-options", "student_dim=3")
    assert res.code == 2 and "student_dim" in res.err and "set by itra-train" in res.err, res


class _Scaled(nn.Module):
    def __init__(self, scale: float = 1.0, **_: object) -> None:
        super().__init__()
        self.scale = scale


def _wrapper(**kwargs: object) -> nn.Module:
    return _Scaled(**kwargs)


def test_options_of_a_wrapper_factory_are_checked_against_the_class_it_builds():
    from itra_bench.losses import LossSpec, build_loss

    spec = LossSpec("scaled", _wrapper)
    assert build_loss(spec, 4, 4, 0, {"scale": 2.0}).scale == 2.0
    with pytest.raises(UserError, match="'scale'"):
        build_loss(spec, 4, 4, 0, {"sclae": 2.0})
    with pytest.raises(UserError, match="'scale'"):
        build_loss(LossSpec("scaled", _Scaled), 4, 4, 0, {"sclae": 2.0})
