"""Every built-in objective trains the demo setup (digits, the tiny CLIP) on the CPU.

A few hundred steps each: the loss must go down and stay finite (a NaN stops itra-train with
exit code 2). Distillation objectives learn from a teacher trained by the demo recipe, and the
student's zero-shot top-1 on the held-out digits must end far above chance (10 %).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_data import TINY, digits_csv

ROWS, EPOCHS = 800, 8  # 25 steps of 32 per epoch: 200 steps
SETTINGS = [*TINY, "--epochs", str(EPOCHS), "--warmup", "20", "--log-every-n-steps", "100"]
PROTOTYPES = ["--image-head", "dino", "--text-head", "dino", "--prototypes", "32"]

#: Objectives without a teacher: the image tower learns from the text tower and back.
ALIGNMENT = {
    "infonce": [],
    "protoclip": ["--loss-options", "episode_size=256", "num_prototypes=16"],
    "vicreg": [],
    "barlowtwins": [],
}
#: DINO is uni-directional: its targets come from the teacher side, centred and sharpened.
#: With a frozen, randomly initialised text tower as that side (no --teacher) the targets are
#: nearly uniform (the loss sits near ln K), so it learns from the demo teacher's image tower.
DINO = ["--distill-image", "image", *PROTOTYPES]
#: Distillation from the demo teacher. Relational objectives (RKD, CompRess-2q) and SimReg
#: (whose prediction head is discarded after training) do not put the student's two towers in
#: one space by themselves, so they train beside the InfoNCE alignment term (--align-weight),
#: as CLIP distillation does in practice; the others align the towers through the teacher.
DISTILLATION = {
    "rkd": ["--align-weight", "1"],
    "seed": ["--loss-options", "queue_size=256"],
    # One queue of 256 left the student at 37 % zero-shot with torch 2.14 (the same on the
    # code before and after the trust changes); a longer queue gives the KL targets more
    # teacher neighbours: 53 %.
    "compress-1q": ["--loss-options", "queue_size=4096"],
    "compress-2q": ["--loss-options", "queue_size=256", "--align-weight", "1"],
    "protocpc": [*PROTOTYPES],
    "simreg": ["--align-weight", "1"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return digits_csv(tmp_path_factory.mktemp("digits"), ROWS)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A checkpoint of the demo recipe (trained once for this module)."""
    from itra_train.demo import train_demo

    return train_demo(tmp_path_factory.mktemp("demo-teacher"), workers=0)


def _train(train, data: Path, logs: Path, loss: str, extra: list[str]) -> list[dict]:
    res = train("--train-data", data, "--logs", logs, "--name", loss, "--loss", loss,
                *SETTINGS, *extra, "--eval-tasks", "digits-zeroshot", "--eval-every",
                str(EPOCHS))
    assert res.code == 0, res  # a NaN or infinite loss would stop with code 2
    lines = (logs / loss / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _falls(records: list[dict], key: str) -> None:
    first, last = records[0][key], records[-1][key]
    assert last < first, f"{key}: {first:.4f} in epoch 1, {last:.4f} in epoch {EPOCHS}"


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(ALIGNMENT))
def test_alignment_objective_trains(train, data, tmp_path, loss):
    records = _train(train, data, tmp_path, loss, ALIGNMENT[loss])
    assert records[-1]["step"] == EPOCHS * ROWS // 32
    _falls(records, "train_loss")


@pytest.mark.slow
def test_dino_trains_from_a_teacher(train, data, teacher, tmp_path):
    records = _train(train, data, tmp_path, "dino", ["--teacher", teacher, *DINO])
    _falls(records, "train_loss")


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(DISTILLATION))
def test_distillation_objective_trains_a_student(train, data, teacher, tmp_path, loss):
    records = _train(train, data, tmp_path, loss, ["--teacher", teacher, "--distill-image",
                                                   "image", "--distill-text", "text",
                                                   *DISTILLATION[loss]])
    # The distillation terms themselves fall, not only the alignment term beside them.
    kd_terms = [k for k in records[0] if k.startswith(("train/image", "train/text"))]
    assert kd_terms
    for key in kd_terms:
        _falls(records, key)
    zeroshot = records[-1]["eval/digits-zeroshot/zeroshot/acc1"]
    assert zeroshot >= 0.4, f"student zero-shot top-1 {zeroshot:.3f} (chance 0.1)"
