"""ELEVATER full-model fine-tuning (`--mode finetune`): the CLI end to end on the demo model,
the protocol's training and search on a tiny model, and that the caller's model is left as
it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from elevater_data import tiny_card, use_tiny_cards, write_dataset
from itra_test_plugin import PixelModel

from itra_bench.context import RunContext
from itra_bench.errors import UserError
from itra_bench.model import IMAGE, TEXT
from itra_bench.model_building import build_model
from itra_bench.registry import load_registry
from itra_bench.results import iter_records
from itra_bench.runner import RunConfig
from itra_bench.threads import torch_threads
from itra_bench.vision_benchmark.cards import find_card
from itra_bench.vision_benchmark.few_shot import sample_few_shot
from itra_bench.vision_benchmark.finetune import FinetuneConfig, elevater_finetune
from itra_bench.vision_benchmark.readers import open_split

CARD = tiny_card(find_card("cifar-10"), per_class=4)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("elevater")
    write_dataset(CARD, root, per_class=4)
    return root


@pytest.fixture(autouse=True)
def _tiny_cards(monkeypatch):
    use_tiny_cards(monkeypatch, ["cifar-10"], per_class=4)


@pytest.fixture(autouse=True)
def _one_thread():
    # The test models are tiny: with their small matrices, a second intra-op thread costs
    # more than it gains, and far more when another process holds a core.
    with torch_threads(1):
        yield


def _splits(data_root):
    train, test = open_split(CARD, data_root, "train"), open_split(CARD, data_root, "test")
    return train, test, torch.tensor(train.targets), torch.tensor(test.targets)


def _finetune(model, data_root, shots=2, **kwargs):
    train, test, train_y, test_y = _splits(data_root)
    rows = sample_few_shot(train_y, shots, 0, CARD.num_classes)
    kwargs.setdefault("tune", False)
    if not kwargs["tune"]:
        kwargs.setdefault("lr", 0.01)
        kwargs.setdefault("l2", 1e-4)
    return elevater_finetune(model, train, rows, train_y[rows], test, test_y, CARD.num_classes,
                             RunContext(), **kwargs)


@pytest.mark.slow
def test_cli_finetune_writes_result_and_prediction_file(cli, tmp_path, data_root):
    out = tmp_path / "out"
    res = cli("run", "--model", "demo:random", "--tasks", "cifar-10", "--data-root", data_root,
              "--mode", "finetune", "--shots", "2", "--seeds", "0", "--no-tuning", "--lr",
              "0.01", "--l2", "0.0001", "--workers", "0", "--no-progress", "--output", out,
              "--no-cache")
    assert res.code == 0, res
    [(_, rec)] = list(iter_records(out))
    assert rec["variant"] == "finetune-2shot-seed0" and rec["main_score"] == "acc1"
    d = rec["details"]
    assert d["mode"] == "finetune" and d["num_train_images"] == 20
    assert (d["lr"], d["l2"], d["epochs"]) == (0.01, 0.0001, 50)
    assert len(d["train_loss"]) == 50 and d["train_loss"][-1] < d["train_loss"][0]
    # The backbone trained too: far more parameters than a linear probe's head (64-d demo).
    head_only = CARD.num_classes * (64 + 1)
    assert d["num_trainable_params"] > 10 * head_only
    assert rec["num_samples"] == 40
    pred = json.loads(open(d["predictions"]).read())
    assert pred["dataset_name"] == "cifar-10" and pred["n_shot"] == 2
    assert pred["rnd_seeds"] == [0]
    assert pred["num_trainable_params"] == d["num_trainable_params"]
    assert pred["num_params"] > pred["num_backbone_params"]  # the head is counted in
    probs = np.array(pred["predictions"][0])
    assert probs.shape == (40, CARD.num_classes)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)


def test_original_model_untouched_and_runs_are_deterministic(data_root, tmp_path):
    registry = load_registry()
    model = build_model(RunConfig(model="demo:random", tasks=[]), registry).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    task = registry.tasks["cifar-10"].item
    options = {"mode": "finetune", "shot": 2, "seed": 0, "tuning": False, "lr": 0.01,
               "l2": 1e-4, "final_epochs": "3"}
    results = []
    for run in range(2):
        ctx = RunContext(data_root=data_root, output_dir=tmp_path / str(run), options=options)
        ctx.output_dir.mkdir()
        results.append(task.run(model, ctx))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == grads and not model.training
    preds = [json.loads(open(r.details["predictions"]).read())["predictions"] for r in results]
    assert preds[0] == preds[1] and results[0].metrics == results[1].metrics
    assert results[0].details["epochs"] == 3


def test_training_lowers_the_loss_of_a_tiny_model(data_root):
    model = PixelModel()  # its projection is frozen for evaluation; fine-tuning trains it
    result = _finetune(model, data_root, lr=0.1, l2=0.0,
                       config=FinetuneConfig(epochs=10, extra_final_epochs=10))
    assert result.epochs == 20 and len(result.train_loss) == 20
    assert all(b < a for a, b in zip(result.train_loss, result.train_loss[1:], strict=False))
    assert result.train_loss[-1] < 0.1 * result.train_loss[0]
    assert result.test_score >= 0.8  # the colour classes are separable (chance: 0.1)
    assert result.num_trainable_params == 3 * 8 * 8 * 32 + CARD.num_classes * (32 + 1)
    assert result.probs_test.shape == (40, CARD.num_classes)
    assert torch.equal(result.test_indices, torch.arange(40))
    assert not model.proj.requires_grad


def test_search_follows_elevaters_sweep_on_a_tiny_grid(data_root):
    cfg = FinetuneConfig(epochs=2, extra_final_epochs=1, lr_grid=(1e-6, 0.05),
                         l2_grid=(1e-6, 1e-4, 1e-2, 1.0), l2_coarse=(0, 3), l2_spans=(1,))
    result = _finetune(PixelModel(), data_root, shots=3, tune=True, config=cfg)
    # Per learning rate: the coarse points, then one step to each side of the peak.
    tried = [(lr, l2) for lr, l2, _ in result.trace]
    assert tried[:2] == [(1e-6, 1e-6), (1e-6, 1.0)]
    assert {lr for lr, _ in tried} == {1e-6, 0.05}
    scores: dict[float, float] = {}
    for lr, _, s in result.trace:
        scores[lr] = max(scores.get(lr, 0.0), s)
    best_lr = max(scores, key=lambda lr: (scores[lr], -lr))  # ties keep the smaller rate
    assert result.lr == best_lr and result.val_score == scores[best_lr]
    assert (result.lr, result.l2, result.val_score) in result.trace
    # 3 shots: ELEVATER's 20 % carve-out keeps one image per class for validation; the final
    # run trains on all 30 again.
    assert result.num_train_images == 30 and result.epochs == 3


def test_one_shot_samples_two_and_trains_on_one(cli, tmp_path, data_root):
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", "cifar-10",
              "--data-root", data_root, "--mode", "finetune", "--shots", "1", "--no-tuning",
              "--lr", "0.01", "--l2", "0", "--task-option", "final_epochs=2", "--workers", "0",
              "--no-progress", "--output", tmp_path / "out", "--no-cache")
    assert res.code == 0, res
    [(_, rec)] = list(iter_records(tmp_path / "out"))
    assert rec["details"]["num_train_images"] == CARD.num_classes
    assert rec["details"]["n_shot"] == 1


def test_head_from_text_embeddings_needs_a_text_encoder(cli, tmp_path, data_root):
    task = load_registry().tasks["cifar-10"].item
    assert task.required_modalities({"mode": "finetune"}) == {IMAGE}
    assert task.required_modalities({"mode": "finetune", "head_init": "text"}) == {IMAGE, TEXT}
    with pytest.raises(UserError, match="head_init=zero"):
        task.required_modalities({"mode": "finetune", "head_init": "zero"})
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", "cifar-10",
              "--data-root", data_root, "--mode", "finetune", "--shots", "2", "--no-tuning",
              "--lr", "0.01", "--l2", "0", "--task-option", "head_init=text", "--task-option",
              "final_epochs=2", "--workers", "0", "--no-progress", "--output",
              tmp_path / "out", "--no-cache")
    assert res.code == 0, res
    [(_, rec)] = list(iter_records(tmp_path / "out"))
    assert rec["details"]["head_init"] == "text"


def test_text_head_starts_from_the_given_class_embeddings(data_root):
    head = torch.nn.functional.normalize(torch.randn(CARD.num_classes, 32), dim=-1)
    result = _finetune(PixelModel(), data_root, lr=1e-9, l2=0.0, head_init=head,
                       config=FinetuneConfig(epochs=1, extra_final_epochs=0))
    assert result.probs_test.shape == (40, CARD.num_classes)
    with pytest.raises(ValueError, match="rows for 10 classes"):
        _finetune(PixelModel(), data_root, head_init=head[:3])


@pytest.mark.gpu
def test_finetune_on_cuda_with_amp_fp16(cli, tmp_path, data_root):
    res = cli("run", "--model", "demo:random", "--tasks", "cifar-10", "--data-root", data_root,
              "--mode", "finetune", "--shots", "2", "--no-tuning", "--lr", "0.01", "--l2",
              "0.0001", "--task-option", "final_epochs=5", "--device", "cuda", "--precision",
              "amp_fp16", "--workers", "1", "--no-progress", "--output", tmp_path / "out",
              "--no-cache")
    assert res.code == 0, res
    [(_, rec)] = list(iter_records(tmp_path / "out"))
    d = rec["details"]
    assert rec["config"]["device"].startswith("cuda") and len(d["train_loss"]) == 5
    assert all(np.isfinite(d["train_loss"]))
    probs = np.array(json.loads(open(d["predictions"]).read())["predictions"][0])
    assert probs.shape == (40, CARD.num_classes) and np.isfinite(probs).all()
