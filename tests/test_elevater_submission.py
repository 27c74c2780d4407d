"""ELEVATER prediction files and their combination, as ELEVATER's prepare_submit does it."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from itra_bench.errors import UserError
from itra_bench.vision_benchmark.cards import SplitFiles, find_card
from itra_bench.vision_benchmark.submission import (
    combine,
    prediction_record,
    write_prediction_file,
    write_submission,
)


def record(dataset="cifar-10", seed=0, trainable=10, shot=5, rows=3, classes=4, model="m"):
    probs = np.random.default_rng(seed).dirichlet(np.ones(classes), size=rows)
    return prediction_record(model_name=model, dataset_name=dataset, probabilities=probs,
                             seed=seed, n_shot=shot, num_trainable_params=trainable,
                             num_params=100, num_visual_params=60, num_backbone_params=100)


def test_combination_averages_trainable_params_and_concatenates_seeds(tmp_path):
    entries = combine([(tmp_path / "a", record(seed=0, trainable=10)),
                       (tmp_path / "b", record(seed=1, trainable=20)),
                       (tmp_path / "c", record(dataset="mnist", seed=0))])
    by = {e["dataset_name"]: e for e in entries}
    assert list(by) == ["cifar-10", "mnist"]
    assert by["cifar-10"]["num_trainable_params"] == 15.0
    assert by["cifar-10"]["rnd_seeds"] == [0, 1]
    assert np.asarray(by["cifar-10"]["predictions"]).shape == (2, 3, 4)
    assert list(by["cifar-10"]) == ["model_name", "dataset_name", "num_trainable_params",
                                    "num_params", "num_visual_params", "num_backbone_params",
                                    "n_shot", "rnd_seeds", "predictions"]


@pytest.mark.parametrize(("field", "kwargs"), [("n_shot", {"shot": 10}),
                                                ("model_name", {"model": "other"})])
def test_disagreeing_fields_are_refused_naming_both_files(tmp_path, field, kwargs):
    with pytest.raises(UserError, match=f"disagree on '{field}'") as err:
        combine([(tmp_path / "one.json", record()),
                 (tmp_path / "two.json", record(seed=1, **kwargs))])
    assert "one.json" in str(err.value) and "two.json" in str(err.value)


def test_files_round_to_six_decimals_and_zip_round_trips(tmp_path):
    rec = record()
    rec["predictions"] = [[[0.123456789, 0.876543211]]]
    write_prediction_file(tmp_path / "p" / "zeroshot.predictions.json", rec)
    stored = json.loads((tmp_path / "p" / "zeroshot.predictions.json").read_text())
    assert stored["predictions"] == [[[0.123457, 0.876543]]]
    card = replace(find_card("cifar-10"), num_classes=2,
                   splits={"test": SplitFiles("test.txt", (), num_images=1)})
    path, entries = write_submission(tmp_path / "p", tmp_path / "s.zip", cards=[card])
    with zipfile.ZipFile(path) as zf:
        doc = json.loads(zf.read("all_predictions.json"))
    assert doc == {"data": entries}


def test_not_a_prediction_file_and_empty_folder(tmp_path):
    with pytest.raises(UserError, match="lacks"):
        combine([(tmp_path / "x.json", {"dataset_name": "a"})])
    with pytest.raises(UserError, match="no prediction files"):
        write_submission(tmp_path, tmp_path / "s.zip")
