"""ELEVATER numbers that can be trusted: a truncated or edited index is refused, not scored;
``submit`` refuses partial prediction files; results report the score EvalAI will compute from
the 6-decimal prediction file; a card is a task file (``--tasks my-card.yaml``, and shipped by
a plugin through ``itra_bench_task_files``); metric names mean one thing across results."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from elevater_data import tiny_card, use_tiny_cards, write_dataset

from itra_bench.errors import UserError
from itra_bench.protocols.classification_metrics import classification_metrics
from itra_bench.registry import load_registry
from itra_bench.results import iter_records
from itra_bench.vision_benchmark.cards import CARDS_DIR, find_card, load_card
from itra_bench.vision_benchmark.metrics import elevater_metric
from itra_bench.vision_benchmark.readers import open_split
from itra_bench.vision_benchmark.submission import prediction_record, write_prediction_file

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "itra-bench-example-plugin"


def _run(cli, tmp_path, data_root, *tasks, extra=()):
    return cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", *tasks,
               "--data-root", data_root, "--output", tmp_path / "out", "--no-cache",
               "--workers", "0", "--no-progress", *extra)


def _records(out):
    return {r["task"]: r for _, r in iter_records(out) if r["protocol"] == "elevater"}


# --- 1.4: a truncated index is refused ------------------------------------------------------


@pytest.fixture
def cifar100(tmp_path, monkeypatch):
    """cifar-100 with one image per class per split (labels 0..99), card counts to match."""
    use_tiny_cards(monkeypatch, ["cifar-100"], per_class=1)
    write_dataset(tiny_card(find_card("cifar-100"), 1), tmp_path / "data", per_class=1)
    return tmp_path / "data", tiny_card(find_card("cifar-100"), 1)


def _cut_inside_label(index: Path, label: str = "25") -> None:
    """Cut the file inside the label ``label`` (``... 25`` becomes ``... 2``), as an
    interrupted download or copy leaves it."""
    text = index.read_text()
    end = text.index(f" {label}\n") + 2
    index.write_text(text[:end])


def test_index_cut_inside_a_label_is_refused_naming_file_and_counts(cifar100):
    data_root, card = cifar100
    index = data_root / card.root / card.splits["test"].index
    _cut_inside_label(index)
    with pytest.raises(UserError) as err:
        open_split(card, data_root, "test")
    msg = str(err.value)
    assert str(index) in msg
    assert "26 images" in msg and "100" in msg  # found, and the card's count
    assert "download and extract the dataset again" in msg.lower()


def test_truncated_index_stops_the_run_with_exit_2(cli, tmp_path, cifar100):
    data_root, card = cifar100
    _cut_inside_label(data_root / card.root / card.splits["test"].index)
    res = _run(cli, tmp_path, data_root, "cifar-100")
    assert res.code == 2, res
    assert "test_images.txt" in res.err and "26 images" in res.err
    assert not _records(tmp_path / "out")


def test_check_files_reports_a_truncated_train_index(cifar100):
    data_root, card = cifar100
    task = load_registry().tasks["cifar-100"].item
    options = {"mode": "linear_probe"}
    assert task.check_files(data_root, options) == []
    _cut_inside_label(data_root / card.root / card.splits["train"].index)
    assert task.check_files(data_root, {"mode": "zeroshot"}) == []  # zero-shot reads no train
    [problem] = task.check_files(data_root, options)
    assert "train_images.txt" in problem and "26 images" in problem and "100" in problem


def test_check_data_reports_the_mismatch(cli, cifar100):
    data_root, card = cifar100
    res = cli("check-data", "--tasks", "cifar-100", "--data-root", data_root)
    assert res.code == 0, res
    _cut_inside_label(data_root / card.root / card.splits["test"].index)
    res = cli("check-data", "--tasks", "cifar-100", "--data-root", data_root)
    text = " ".join((res.out + res.err).replace("│", " ").split())
    assert res.code != 0, res
    assert "26 images" in text and "100" in text


def test_check_files_reports_images_missing_from_the_zip(cifar100):
    data_root, card = cifar100
    root = data_root / card.root
    zip_path = root / card.splits["test"].files[0]
    with zipfile.ZipFile(zip_path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    del members["test/img 7.png"]
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    task = load_registry().tasks["cifar-100"].item
    [problem] = task.check_files(data_root, {})
    assert "test/img 7.png" in problem and str(zip_path) in problem


def test_check_files_leaves_missing_paths_to_required_paths(tmp_path):
    task = load_registry().tasks["cifar-10"].item
    assert task.check_files(tmp_path, {}) == []


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda lines: lines[:3] + [lines[2]] + lines[4:], "lines 3 and 4"),  # duplicated line
    (lambda lines: [lines[0].rsplit(" ", 1)[0] + " \u0663"] + lines[1:], "not"),  # Arabic 3
    (lambda lines: [lines[0].rsplit(" ", 1)[0] + " 1_0"] + lines[1:], "not"),
    (lambda lines: [lines[0].rsplit(" ", 1)[0] + " 100"] + lines[1:], "out of range"),
    (lambda lines: ["test.zip@ 3"] + lines[1:], "no image path"),
])
def test_edited_index_lines_are_refused(cifar100, edit, expected):
    data_root, card = cifar100
    index = data_root / card.root / card.splits["test"].index
    index.write_text("\n".join(edit(index.read_text().splitlines())) + "\n")
    with pytest.raises(UserError, match=expected) as err:
        open_split(card, data_root, "test")
    assert str(index) in str(err.value)


def test_coco_image_count_is_checked_too(tmp_path):
    card = tiny_card(find_card("resisc45_clip"), 1)
    write_dataset(card, tmp_path, per_class=1)
    index = tmp_path / card.root / card.splits["test"].index
    doc = json.loads(index.read_text())
    doc["images"] = doc["images"][:-1]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] <= len(doc["images"])]
    index.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="44 images") as err:
        open_split(card, tmp_path, "test")
    assert str(index) in str(err.value) and "45" in str(err.value)


def test_every_builtin_card_states_its_image_counts():
    cards = [t.item.card for t in load_registry().tasks.values() if hasattr(t.item, "card")]
    assert len(cards) == 21
    for card in cards:
        assert card.splits["test"].num_images > 0, card.name
        assert all(isinstance(s.num_images, int) for s in card.splits.values()), card.name


def test_a_split_that_is_not_distributed_is_refused(tmp_path):
    card = find_card("imagenet-1k")  # ELEVATER ships its validation images only
    assert card.splits["train"].num_images == 0
    with pytest.raises(UserError, match="not distributed"):
        open_split(card, tmp_path, "train")


# --- 1.5: submit refuses partial prediction files -------------------------------------------


def _prediction_file(folder: Path, dataset: str, rows: int, classes: int) -> Path:
    probs = np.random.default_rng(0).dirichlet(np.ones(classes), size=rows)
    record = prediction_record(model_name="m", dataset_name=dataset, probabilities=probs,
                               seed=0, n_shot=0, num_trainable_params=0, num_params=1,
                               num_visual_params=1, num_backbone_params=1)
    return write_prediction_file(folder / dataset / "zeroshot.predictions.json", record)


def test_submit_refuses_29_of_30_rows_naming_the_dataset(cli, tmp_path, monkeypatch):
    use_tiny_cards(monkeypatch, ["cifar-10"], per_class=3)  # 30 test images
    _prediction_file(tmp_path / "preds", "cifar-10", 29, 10)
    res = cli("submit", tmp_path / "preds", "-o", tmp_path / "s.zip")
    assert res.code == 2, res
    msg = " ".join(res.err.split())
    assert "cifar-10" in msg and "29" in msg and "30" in msg
    assert not (tmp_path / "s.zip").exists()

    _prediction_file(tmp_path / "preds", "cifar-10", 30, 10)  # complete: accepted
    res = cli("submit", tmp_path / "preds", "-o", tmp_path / "s.zip")
    assert res.code == 0, res


def test_submit_refuses_wrong_class_count_and_unknown_dataset(cli, tmp_path, monkeypatch):
    use_tiny_cards(monkeypatch, ["cifar-10"], per_class=3)
    _prediction_file(tmp_path / "a", "cifar-10", 30, 9)
    res = cli("submit", tmp_path / "a", "-o", tmp_path / "s.zip")
    assert res.code == 2 and "9 scores" in res.err and "10 classes" in res.err, res
    _prediction_file(tmp_path / "b", "my-own-data", 30, 10)
    res = cli("submit", tmp_path / "b", "-o", tmp_path / "s.zip")
    assert res.code == 2 and "my-own-data" in res.err, res


# --- 1.9: the score EvalAI computes from the rounded file -----------------------------------


def _tie_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes; in class 0's column the positive image scores 0.1000004 and the negative
    0.1000001, distinct, but both are 0.1 at 6 decimals: a tie the file creates."""
    probs = torch.tensor([[0.1000004, 0.8999996], [0.1000001, 0.8999999],
                          [0.05, 0.95]], dtype=torch.float64)
    targets = torch.tensor([[1, 1], [0, 1], [0, 1]])
    return probs, targets


def test_rounding_to_six_decimals_changes_11point_map_and_both_are_reported():
    from itra_bench.vision_benchmark.submission import file_probabilities
    from itra_bench.vision_benchmark.task import score_predictions

    probs, targets = _tie_case()
    exact = elevater_metric("11point_mAP", probs, targets)
    from_file = elevater_metric("11point_mAP", file_probabilities(probs.numpy()), targets)
    assert exact == pytest.approx(1.0)
    assert from_file == pytest.approx((1 + (6 / 11)) / 2)  # class 0: 0.5 at recalls > 0
    card = find_card("voc-2007-classification")
    metrics = score_predictions(card, probs.numpy(), targets)
    assert metrics == {"11point_mAP": from_file, "11point_mAP_unrounded": exact}


def test_run_reports_the_score_of_its_own_prediction_file(cli, tmp_path, monkeypatch):
    use_tiny_cards(monkeypatch, ["voc-2007-classification"], per_class=2)
    card = find_card("voc-2007-classification")
    labels = write_dataset(card, tmp_path / "data", per_class=2)
    assert _run(cli, tmp_path, tmp_path / "data", "voc-2007-classification").code == 0
    rec = _records(tmp_path / "out")["voc-2007-classification"]
    pred = json.loads(Path(rec["details"]["predictions"]).read_text())
    targets = torch.zeros(len(labels["test"]), card.num_classes)
    for n, labs in enumerate(labels["test"]):
        targets[n, labs] = 1
    assert rec["main_score"] == "11point_mAP"
    assert rec["main_score_value"] == elevater_metric("11point_mAP",
                                                      np.asarray(pred["predictions"][0]), targets)
    assert "11point_mAP_unrounded" in rec["metrics"]


# --- 2: a card is a task file; a plugin ships cards ------------------------------------------


def _user_card(tmp_path: Path, **changes) -> Path:
    doc = yaml.safe_load((CARDS_DIR / "cifar-10.yaml").read_text(encoding="utf-8"))
    doc.update({"name": "my-cifar", "aliases": [], "suites": ["mine"],
                "root": "classification/my_cifar"}, **changes)
    for spec in doc["splits"].values():
        spec["num_images"] = 20
    path = tmp_path / "my-card.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize("mode", ["zeroshot", "linear_probe"])
def test_a_user_card_is_a_task_file(cli, tmp_path, mode):
    path = _user_card(tmp_path)
    write_dataset(load_card(path), tmp_path / "data", per_class=2)
    res = _run(cli, tmp_path, tmp_path / "data", path,
               extra=("--mode", mode, "--shots", "1", "--no-tuning", "--lr", "0.1",
                      "--l2", "0"))
    assert res.code == 0, res
    rec = _records(tmp_path / "out")["my-cifar"]
    assert rec["details"]["mode"] == mode and rec["main_score"] == "acc1"
    assert json.loads(Path(rec["details"]["predictions"]).read_text())["dataset_name"] == \
        "my-cifar"


def test_a_user_card_with_a_bad_key_names_file_and_key(cli, tmp_path):
    path = _user_card(tmp_path, num_clases=10)
    res = _run(cli, tmp_path, tmp_path, path)
    assert res.code == 2 and str(path) in res.err and "'num_clases'" in res.err, res
    assert "num_classes" in res.err
    path = _user_card(tmp_path, task_type="elevater", metric="top1")
    res = _run(cli, tmp_path, tmp_path, path)
    assert res.code == 2 and str(path) in res.err and "'metric'" in res.err, res


def test_a_builtin_card_is_a_valid_task_file(tmp_path):
    from itra_bench.vision_benchmark.task import ElevaterTask
    from itra_bench.yaml_tasks import load_task_file

    protocols = {n: p.item for n, p in load_registry().task_file_protocols.items()}
    task = load_task_file(CARDS_DIR / "caltech-101.yaml", protocols)
    assert isinstance(task, ElevaterTask) and task.card == find_card("caltech-101")


def _example_card_task(monkeypatch, tmp_path: Path, tiny: bool):
    """The example plugin's ``imagenette`` task, from the card its ``itra_bench_task_files``
    hook ships; with ``tiny``, the same card with 4 images per split, so tiny data fits."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import itra_bench_example_plugin.plugin as example

    card_file = EXAMPLE / "itra_bench_example_plugin" / "cards" / "imagenette.yaml"
    assert example.itra_bench_task_files() == [card_file]
    if tiny:
        doc = yaml.safe_load(card_file.read_text(encoding="utf-8"))
        for spec in doc["splits"].values():
            spec["num_images"] = 20
        (tmp_path / "cards").mkdir()
        (tmp_path / "cards" / "imagenette.yaml").write_text(yaml.safe_dump(doc))
        monkeypatch.setattr(example, "CARDS_DIR", tmp_path / "cards")
    task = load_registry([example.__name__]).tasks["imagenette"]
    assert task.plugin.name == example.__name__
    return task.item


def _run_example_card(cli, tmp_path, card, *, per_class=2, mode="zeroshot"):
    write_dataset(card, tmp_path / "data", per_class=per_class,
                  splits=["test"] if mode == "zeroshot" else None,
                  use_card_counts=per_class is None)
    res = _run(cli, tmp_path, tmp_path / "data", "imagenette",
               extra=("--plugin", "itra_bench_example_plugin.plugin", "--mode", mode,
                      "--no-tuning", "--lr", "0.1", "--l2", "0"))
    assert res.code == 0, res
    return _records(tmp_path / "out")["imagenette"]


@pytest.mark.parametrize("mode", ["zeroshot", "linear_probe"])
def test_example_plugin_ships_a_card_that_runs_end_to_end(cli, tmp_path, monkeypatch, mode):
    task = _example_card_task(monkeypatch, tmp_path, tiny=True)
    assert task.card.root == "imagenette2" and task.card.splits["test"].files == ()
    rec = _run_example_card(cli, tmp_path, task.card, mode=mode)
    assert rec["num_samples"] == 20 and rec["main_score"] == "acc1"
    assert rec["details"]["mode"] == mode


@pytest.mark.slow
def test_example_plugin_card_reads_imagenette_sized_plain_files(cli, tmp_path, monkeypatch):
    # The shipped card as it is: its real counts (3925 validation images), plain files.
    task = _example_card_task(monkeypatch, tmp_path, tiny=False)
    rec = _run_example_card(cli, tmp_path, task.card, per_class=None)
    assert rec["num_samples"] == 3925 and rec["main_score"] == "acc1"
    assert rec["metrics"]["acc1"] > 0.1  # colour-coded classes; chance is 0.1


# --- 2, vocabulary: one name per definition --------------------------------------------------


def test_elevater_mean_per_class_differs_from_generic_recall_so_it_has_its_own_name():
    # Class 2 has no test sample; its column wins both rows. The generic metric counts both
    # as misses, ELEVATER drops the column first and counts both as hits.
    scores = torch.tensor([[0.3, 0.1, 0.6], [0.1, 0.3, 0.6]])
    labels = torch.tensor([0, 1])
    generic = classification_metrics(scores, labels)["mean_per_class_recall"]
    elevater = elevater_metric("mean_per_class", scores, labels)
    assert (generic, elevater) == (0.0, 1.0)
    assert elevater_metric("mean_per_class_recall_present", scores, labels) == elevater
    # ELEVATER's accuracy is top-1 accuracy (argmax, ties to the lower index): the same.
    tied = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4], [0.1, 0.2, 0.7]])
    y = torch.tensor([1, 1, 2])
    assert elevater_metric("accuracy", tied, y) == classification_metrics(tied, y)["acc1"]


def test_results_use_the_shared_names_and_cards_accept_both(cli, tmp_path, monkeypatch):
    use_tiny_cards(monkeypatch, ["cifar-10", "caltech-101"], per_class=1)
    for name in ("cifar-10", "caltech-101"):
        write_dataset(find_card(name), tmp_path / "data", per_class=1)
    assert _run(cli, tmp_path, tmp_path / "data", "cifar-10", "caltech-101").code == 0
    recs = _records(tmp_path / "out")
    assert recs["cifar-10"]["main_score"] == "acc1"
    assert set(recs["cifar-10"]["metrics"]) == {"acc1", "acc1_unrounded"}
    assert recs["caltech-101"]["main_score"] == "mean_per_class_recall_present"
    assert "acc1" in recs["caltech-101"]["metrics"]
    assert "accuracy" not in recs["caltech-101"]["metrics"]
    res = cli("results", tmp_path / "out")
    assert res.code == 0, res
    summary = (tmp_path / "out" / "elevater_summary.md").read_text()
    assert "| caltech-101 | mean_per_class_recall_present |" in summary
    # Cards keep ELEVATER's metric names and accept the result names.
    for alias, metric in (("acc1", "accuracy"), ("mean-per-class", "mean_per_class"),
                          ("mean_per_class_recall_present", "mean_per_class")):
        assert load_card(_user_card(tmp_path, metric=alias)).metric == metric
