"""``itra_bench.evaluate``: what ``itra-bench run`` computes, from Python, on a model spec or a
model object, returned as ``Results``; bad input is one clear ``UserError``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
from torchvision import transforms

import itra_bench
from itra_bench import Results, TaskScore, UserError, evaluate

PIXEL = ["itra_test_plugin"]


def quick(tmp_path: Path, **settings):
    """The settings of a quick CPU run with its own feature cache."""
    return {"cache_dir": tmp_path / "cache", "workers": 0, "device": "cpu", **settings}


class TinyEncoder(torch.nn.Module):
    """A plain torch module (no EncoderModel, no fingerprint): 8x8 grey pixels, projected."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.proj = torch.nn.Linear(64, 16)
        self.image_transform = transforms.Compose(
            [transforms.Grayscale(), transforms.Resize((8, 8)), transforms.ToTensor()])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images.flatten(1))


def test_a_model_spec_gives_what_itra_bench_run_writes(cli, tmp_path):
    res = cli("run", "--model", "pixel", "--plugin", *PIXEL, "--tasks", "digits-knn",
              "--output", tmp_path / "cli", "--cache-dir", tmp_path / "cache", "--workers", "0",
              "--device", "cpu", "--no-progress")
    assert res.code == 0, res
    record = json.loads(next((tmp_path / "cli").rglob("knn.json")).read_text())
    results = evaluate("pixel", ["digits-knn"], plugins=PIXEL, show_progress=False,
                       **quick(tmp_path, output=tmp_path / "api"))
    [score] = results
    assert (score.model, score.task, score.variant, score.status) == \
        ("pixel", "digits-knn", "knn", "done")
    assert score.main_score == record["main_score"] == "acc1"
    assert score.value == record["main_score_value"] == results.score("digits-knn")
    assert dict(score.metrics) == record["metrics"]
    ci = record["main_score_interval"]
    assert score.interval == (ci["low"], ci["high"])
    # The same model folder (name and fingerprint) under the other output.
    assert score.path == tmp_path / "api" / next((tmp_path / "cli").rglob("knn.json")) \
        .relative_to(tmp_path / "cli")
    assert json.loads(score.path.read_text())["metrics"] == record["metrics"]

    again = evaluate("pixel", "digits-knn", plugins=PIXEL, show_progress=False,
                     **quick(tmp_path, output=tmp_path / "api"))
    assert again[0].status == "exists" and dict(again[0].metrics) == record["metrics"]
    assert again[0].interval == score.interval


def test_without_output_no_result_file_is_kept(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(tmp_path)
    results = evaluate("pixel", "digits-knn", plugins=PIXEL, show_progress=False,
                       **quick(tmp_path))
    assert results[0].status == "done" and results[0].value > 0.9 and results[0].path is None
    assert list(scratch.iterdir()) == []  # the temporary results folder is gone
    assert not (tmp_path / "itra-results").exists()  # nor is the command line's default used


def test_a_torch_module_is_fingerprinted_by_its_class_and_weights(tmp_path):
    model = TinyEncoder()
    model.train()
    first = evaluate(model, "digits-knn", show_progress=False,
                     **quick(tmp_path, output=tmp_path / "out"))
    assert first[0].model == "TinyEncoder" and first[0].status == "done"
    # Given back as it came: training mode, no name or fingerprint stuck to it.
    assert model.training and not hasattr(model, "fingerprint") and not hasattr(model, "name")
    same = evaluate(TinyEncoder(), "digits-knn", show_progress=False,
                    **quick(tmp_path, output=tmp_path / "out"))
    assert same[0].status == "exists" and same[0].path == first[0].path
    with torch.no_grad():
        model.proj.weight.mul_(2)  # "trained": other weights, another model
    changed = evaluate(model, "digits-knn", show_progress=False,
                       **quick(tmp_path, output=tmp_path / "out"))
    assert changed[0].status == "done" and changed[0].path != first[0].path
    named = evaluate(model, "digits-knn", name="mine", show_progress=False,
                     **quick(tmp_path, output=tmp_path / "out"))
    assert named[0].model == "mine" and named[0].path.parts[-3].startswith("mine-")


def test_an_encoder_model_without_fingerprint_gets_one_and_keeps_its_own(tmp_path):
    from itra_test_plugin import PixelModel

    model = PixelModel()
    model.fingerprint = ""
    results = evaluate([model, PixelModel()], "digits-knn", show_progress=False,
                       **quick(tmp_path, output=tmp_path / "out"))
    assert [s.model for s in results] == ["PixelModel", "PixelModel"]
    derived, own = (s.path.parts[-3] for s in results)
    assert derived != own and own.endswith("-" + PixelModel().fingerprint[:8])
    assert model.fingerprint == ""  # not left set: a later evaluation derives it anew


def test_an_object_that_is_no_module_needs_a_fingerprint(tmp_path):
    class Encoder:
        image_transform = transforms.ToTensor()

        def encode_image(self, images):
            return images.flatten(1)

    with pytest.raises(UserError, match="no `fingerprint`.*Set its `fingerprint`"):
        evaluate(Encoder(), "digits-knn", show_progress=False, **quick(tmp_path))
    with pytest.raises(UserError, match="neither `encode_image` nor `encode_text`"):
        evaluate(object(), "digits-knn", **quick(tmp_path))
    del Encoder.image_transform
    with pytest.raises(UserError, match="no `image_transform`"):
        evaluate(Encoder(), "digits-knn", **quick(tmp_path))


@pytest.mark.parametrize(("settings", "message"), [
    ({"batchsize": 8}, "unknown setting 'batchsize'. Did you mean 'batch_size'?"),
    ({"batch_size": 0}, "batch_size must be an integer of at least 1, got 0"),
    ({"precision": "fp64"}, "unknown precision 'fp64'; choose one of fp32"),
    ({"overwrite": "yes"}, "overwrite must be True or False"),
    ({"data_root": 3}, "data_root must be a path"),
    ({"shots": [0]}, "shots takes positive counts or -1"),
    ({"shots": "5"}, "shots takes an integer or a list of integers"),
    ({"mode": "fewshot"}, "mode 'fewshot': choose one of zeroshot, linear_probe, finetune"),
    ({"tuning": False, "lr": 0.1}, "tuning=False needs both lr and l2"),
    ({"lr": 0.1, "l2": 0.0}, "lr and l2 set the linear head's training"),
    ({"task_options": ["k=3"]}, "task_options must be a mapping"),
])
def test_bad_settings_are_one_clear_user_error(tmp_path, settings, message):
    with pytest.raises(UserError) as caught:
        evaluate("pixel", "digits-knn", plugins=PIXEL, **settings)
    assert message in str(caught.value)


def test_spec_settings_are_refused_for_a_model_object(tmp_path):
    with pytest.raises(UserError, match="pretrained say.* a model object is evaluated as it"):
        evaluate(TinyEncoder(), "digits-knn", pretrained=tmp_path / "w.pt", **quick(tmp_path))


def test_task_options_are_those_given():
    from itra_bench.run_settings import protocol_options

    assert protocol_options() == {}
    assert protocol_options(mode="linear_probe", shots=5, seeds=(0, 1), extra={"k": 3}) == \
        {"mode": "linear_probe", "shots": [5], "seeds": [0, 1], "k": 3}
    assert protocol_options(tuning=False, lr=0.1, l2=0.0) == \
        {"tuning": False, "lr": 0.1, "l2": 0.0}


def test_results_look_up_one_score_and_give_plain_data():
    a = TaskScore("m1", "digits-knn", "knn", "done", "acc1", 0.9, (0.85, 0.95),
                  {"acc1": 0.9}, Path("out/m1/knn.json"), 1.5)
    b = TaskScore("m2", "digits-knn", "knn", "exists", "acc1", 0.8, None, {"acc1": 0.8})
    c = TaskScore("m2", "digits-zeroshot", "", "skipped: pixel has no text encoder")
    results = Results((a, b, c))
    assert len(results) == 3 and list(results) == [a, b, c] and results[1:].models == ["m2"]
    assert results.score("digits-knn", model="m1") == 0.9
    assert results.score("digits-zeroshot") is None
    with pytest.raises(UserError, match="2 scores match task='digits-knn'"):
        results.score("digits-knn")
    with pytest.raises(UserError, match="no score for task='nosuch'.*m1 digits-knn"):
        results.find("nosuch")
    assert results.rows()[0] == {
        "model": "m1", "task": "digits-knn", "variant": "knn", "status": "done",
        "main_score": "acc1", "value": 0.9, "interval": [0.85, 0.95], "metrics": {"acc1": 0.9},
        "path": str(Path("out/m1/knn.json")), "seconds": 1.5}
    assert results.as_dict()["m2"]["digits-knn"]["knn"]["value"] == 0.8
    json.dumps(results.as_dict())  # plain data


def test_results_print_the_run_summary(capsys):
    from rich.console import Console

    results = Results((TaskScore("m1", "digits-knn", "knn", "done", "acc1", 0.9,
                                 (0.85, 0.95), {"acc1": 0.9}),))
    results.print(Console(width=200), fmt="csv")
    out = capsys.readouterr().out
    assert "digits-knn" in out and "90.00" in out and "[85.00, 95.00]" in out


def test_evaluate_is_the_public_name():
    assert itra_bench.evaluate is evaluate


def test_a_modules_fingerprint_follows_its_code_and_its_transform():
    # In a notebook, a cell redefining `TinyEncoder` with another encode_image (same name,
    # same weights) is another model: before, it shared the first one's fingerprint, so its
    # cached features (and its "exists" results) were the first model's.
    from itra_bench.in_memory_model import as_encoder_model, derived_fingerprint

    def fingerprint_of(model: torch.nn.Module) -> str:
        return derived_fingerprint(as_encoder_model(model))

    first = fingerprint_of(TinyEncoder())
    assert fingerprint_of(TinyEncoder()) == first  # the same code and weights: the same id

    class TinyEncoder2(TinyEncoder):
        def encode_image(self, images: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.proj(images.flatten(1)))

    TinyEncoder2.__name__ = TinyEncoder2.__qualname__ = "TinyEncoder"
    TinyEncoder2.__module__ = TinyEncoder.__module__
    assert fingerprint_of(TinyEncoder2()) != first

    other_transform = TinyEncoder()
    other_transform.image_transform = transforms.Compose(
        [transforms.Grayscale(), transforms.Resize((8, 8)), transforms.ToTensor(),
         transforms.Normalize([0.5], [0.5])])
    assert fingerprint_of(other_transform) != first
