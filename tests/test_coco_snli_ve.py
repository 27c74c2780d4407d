"""COCO retrieval (2017 captions JSON, Karpathy split) and SNLI-VE (zero-shot thresholds,
TAP-C transfer): generated files in the real formats through `itra-bench run`, compared with
clip-benchmark's retrieval evaluation and with scikit-learn's per-class accuracy on the same
features."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from itra_bench.errors import UserError
from itra_bench.results import iter_records
from itra_bench.tasks.snli_ve.entailment import (
    CONTRADICTION,
    ENTAILMENT,
    LABELS,
    NEUTRAL,
    PairFeatures,
    TransferConfig,
    apply_thresholds,
    choose_thresholds,
    entailment_metrics,
    predict,
    train_transfer_classifier,
)
from itra_bench.threads import torch_threads

PLUGINS = ("--plugin", "itra_test_plugin", "--plugin", "itra_bench.tasks.coco.plugin",
           "--plugin", "itra_bench.tasks.snli_ve.plugin")
KS = (1, 5, 10)


def run_args(tmp_path: Path, data_root: Path, *extra: str, out: str = "out") -> list:
    return ["run", "--model", "pixel", *PLUGINS, "--data-root", data_root,
            "--output", tmp_path / out, "--cache-dir", tmp_path / "cache", "--workers", "0",
            "--no-progress", *extra]


def records(out: Path) -> dict[str, dict]:
    return {r["task"]: r for _, r in iter_records(out)}


def write_jpeg(path: Path, seed: int) -> None:
    """A small JPEG of seeded noise, so every image has its own pixel features."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize((32, 32)).save(path, quality=95)


def pixel_features(paths: list[Path], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and text features of the pixel test model, computed here independently."""
    from itra_test_plugin import PixelModel

    model = PixelModel()
    with torch.no_grad():
        images = torch.stack([model.image_transform(Image.open(p).convert("RGB"))
                              for p in paths])
        return model.encode_image(images), model.encode_text(texts)


def clip_benchmark_recalls(images: torch.Tensor, texts: torch.Tensor, text_to_image: list[int]
                           ) -> dict[str, float]:
    """Recall@k exactly as clip-benchmark's zeroshot_retrieval.evaluate computes it."""
    import torch.nn.functional as F
    from clip_benchmark.metrics.zeroshot_retrieval import batchify, recall_at_k

    scores = F.normalize(texts, dim=-1) @ F.normalize(images, dim=-1).T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), text_to_image] = True
    out = {}
    for k in KS:
        out[f"image_retrieval_recall@{k}"] = (
            batchify(recall_at_k, scores, positive, 4, "cpu", k=k) > 0).float().mean().item()
        out[f"text_retrieval_recall@{k}"] = (
            batchify(recall_at_k, scores.T, positive.T, 4, "cpu", k=k) > 0).float().mean().item()
    return out


# --------------------------------------------------------------------------------- COCO 2017

COCO_IDS = [397133, 37777, 252219, 87038, 174482, 403385, 6818, 480985, 458054, 331352,
            296649, 386912, 502136, 491497, 184791, 348881]  # json order, not id order
UNCAPTIONED = 87038


def write_coco(root: Path) -> Path:
    """``coco2017/annotations/captions_val2017.json`` + ``coco2017/val2017/*.jpg``: 16 images
    listed out of id order, 2-6 captions each, annotations interleaved across images, one
    image with no caption."""
    rng = random.Random(0)
    images, annotations = [], []
    for n, image_id in enumerate(COCO_IDS):
        name = f"{image_id:012d}.jpg"
        images.append({"license": 4, "file_name": name, "height": 32, "width": 32,
                       "date_captured": "2013-11-14 17:02:52", "id": image_id,
                       "coco_url": f"http://images.cocodataset.org/val2017/{name}"})
        write_jpeg(root / "coco2017" / "val2017" / name, seed=n)
        if image_id != UNCAPTIONED:
            for c in range(2 + n % 5):
                annotations.append({"image_id": image_id, "id": 1000 * n + c,
                                    "caption": f"A photo number {n}, caption {c} of it. "})
    rng.shuffle(annotations)
    doc = {"info": {"description": "COCO 2017 Dataset", "version": "1.0", "year": 2017},
           "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 4,
                         "name": "Attribution-NonCommercial-ShareAlike License"}],
           "images": images, "annotations": annotations}
    path = root / "coco2017" / "annotations" / "captions_val2017.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    return path


def test_coco2017_retrieval_matches_clip_benchmark_evaluate(cli, tmp_path):
    """The task's metrics equal clip-benchmark's `evaluate` run on the same annotation file
    through torchvision's CocoCaptions (clip-benchmark's mscoco_captions reader), with the
    uncaptioned image left out as our reader documents."""
    from clip_benchmark.metrics.zeroshot_retrieval import evaluate
    from itra_test_plugin import PixelModel
    from torchvision.datasets import CocoCaptions

    ann = write_coco(tmp_path / "data")
    res = cli(*run_args(tmp_path, tmp_path / "data", "--tasks", "coco2017-retrieval"))
    assert res.code == 0, res
    rec = records(tmp_path / "out")["coco2017-retrieval"]
    n_captions = sum(2 + n % 5 for n, i in enumerate(COCO_IDS) if i != UNCAPTIONED)
    assert rec["num_samples"] == n_captions
    assert rec["details"]["num_images"] == len(COCO_IDS) - 1
    assert rec["details"]["images_without_captions"] == 1
    assert rec["details"]["images_without_captions_examples"] == [f"{UNCAPTIONED:012d}.jpg"]

    model = PixelModel()
    dataset = CocoCaptions(str(tmp_path / "data" / "coco2017" / "val2017"), str(ann),
                           transform=model.image_transform)
    captioned = [i for i in range(len(dataset)) if dataset.coco.getAnnIds(dataset.ids[i])]
    def image_captions_collate_fn(batch):
        # As clip_benchmark.datasets.builder's (that module imports requests, not installed).
        images, texts = zip(*batch, strict=True)
        return torch.stack(images), texts

    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, captioned),
                                         batch_size=5, collate_fn=image_captions_collate_fn)

    class Tokens(list):  # the pixel model embeds strings: "tokenising" keeps them
        def to(self, device):
            return self

    theirs = evaluate(model, loader, Tokens, "cpu", amp=False, recall_k_list=list(KS))
    ours = rec["metrics"]
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key  # theirs: float32 means
    assert 0 < ours["image_retrieval_recall@1"] < 1 and 0 < ours["text_retrieval_recall@5"] < 1
    assert ours["mean_recall"] == pytest.approx(sum(theirs.values()) / len(theirs))
    assert rec["main_score"] == "mean_recall"


def test_coco_task_file_and_bad_input_errors(cli, tmp_path):
    root = tmp_path / "data"
    write_coco(root)
    task = tmp_path / "my-coco.yaml"
    task.write_text("name: my-coco\nprotocol: coco_captions\n"
                    "annotation: coco2017/annotations/captions_val2017.json\n"
                    "images: coco2017/val2017\n")
    res = cli(*run_args(tmp_path, root, "--tasks", task))
    assert res.code == 2 and str(task) in res.err and "'annotation'" in res.err
    assert "did you mean 'annotations'" in res.err

    task.write_text(task.read_text().replace("annotation:", "annotations:"))
    bad = root / "coco2017" / "annotations" / "captions_val2017.json"
    doc = json.loads(bad.read_text())
    doc["annotations"][3].pop("caption")
    bad.write_text(json.dumps(doc))
    res = cli(*run_args(tmp_path, root, "--tasks", task))
    assert res.code == 2 and str(bad) in res.err and "annotations[3]" in res.err

    bad.write_text('{"images": [\n  {"id": 1,}\n]}')
    res = cli(*run_args(tmp_path, root, "--tasks", task))
    assert res.code == 2 and f"{bad}, line 2" in res.err

    res = cli(*run_args(tmp_path, tmp_path / "empty", "--tasks", "coco"))
    assert res.code == 2 and "captions_val2017.json" in res.err and "dataset_coco.json" in res.err


# ------------------------------------------------------------------------- Karpathy 5k split

def write_karpathy(root: Path) -> tuple[list[Path], list[str], list[int]]:
    """``coco/dataset_coco.json`` with all four splits, test images in both 2014 folders, a
    test image with no sentence; returns the test images, captions and caption->image."""
    rng = random.Random(1)
    entries, paths, captions, text_to_image = [], [], [], []
    sent_id = 0
    for n in range(30):
        split = ["test", "train", "val", "test", "restval"][n % 5]
        folder = "val2014" if n % 2 else "train2014"
        filename = f"COCO_{folder}_{n:012d}.jpg"
        write_jpeg(root / "coco" / folder / filename, seed=100 + n)
        count = 0 if n == 5 else 5 + (n % 3 == 0)  # some COCO images have 6 captions
        sentences = []
        for c in range(count):
            raw = f"Picture {n} seen {rng.choice(['near', 'far'])}, take {c}."
            sentences.append({"tokens": raw.lower().strip(".").split(), "raw": raw,
                              "imgid": n, "sentid": sent_id})
            sent_id += 1
        entries.append({"filepath": folder, "sentids": [s["sentid"] for s in sentences],
                        "filename": filename, "imgid": n, "split": split,
                        "sentences": sentences, "cocoid": 1000 + n})
        if split == "test" and count:
            paths.append(root / "coco" / folder / filename)
            captions += [s["raw"] for s in sentences]
            text_to_image += [len(paths) - 1] * count
    (root / "coco").mkdir(exist_ok=True)
    (root / "coco" / "dataset_coco.json").write_text(
        json.dumps({"images": entries, "dataset": "coco"}))
    return paths, captions, text_to_image


def test_karpathy_test_split_matches_clip_benchmark_recall(cli, tmp_path):
    paths, captions, text_to_image = write_karpathy(tmp_path / "data")
    res = cli(*run_args(tmp_path, tmp_path / "data", "--tasks", "coco-karpathy-5k"))
    assert res.code == 0, res
    rec = records(tmp_path / "out")["coco-karpathy-5k"]
    assert rec["details"]["num_images"] == len(paths) == 11
    assert rec["num_samples"] == len(captions)
    assert rec["details"]["images_without_captions"] == 1
    theirs = clip_benchmark_recalls(*pixel_features(paths, captions), text_to_image)
    for key, value in theirs.items():
        assert rec["metrics"][key] == pytest.approx(value, abs=1e-6), key  # theirs: float32 means
    assert 0 < rec["metrics"]["image_retrieval_recall@1"] < 1

    task = tmp_path / "val.yaml"
    task.write_text("name: karpathy-val\nprotocol: karpathy_captions\n"
                    "file: coco/dataset_coco.json\nimages: coco\nsplit: val\n")
    res = cli(*run_args(tmp_path, tmp_path / "data", "--tasks", task))
    assert res.code == 0, res
    assert records(tmp_path / "out")["karpathy-val"]["details"]["num_images"] == 6
    task.write_text(task.read_text().replace("split: val", "split: dev"))
    res = cli(*run_args(tmp_path, tmp_path / "data", "--tasks", task))
    assert res.code == 2 and "'split'" in res.err and str(task) in res.err


# ------------------------------------------------------------------- SNLI-VE thresholds

def test_threshold_rule_on_a_hand_checked_case():
    e, n, c = ENTAILMENT, NEUTRAL, CONTRADICTION
    sims = torch.tensor([0.5, 0.1, 0.7, 0.3, 0.2, 0.4, 0.6])
    labels = torch.tensor([e, c, e, n, c, n, e])
    # Sorted: 0.1 c, 0.2 c | 0.3 n, 0.4 n | 0.5 e, 0.6 e, 0.7 e: one perfect cut.
    t = choose_thresholds(sims, labels)
    assert (t.low, t.high, t.accuracy) == (pytest.approx(0.3), pytest.approx(0.5), 1.0)
    # The boundaries: s == t_hi is entailment, s == t_lo is neutral (only s < t_lo is not).
    assert apply_thresholds(torch.tensor([0.5, 0.3, 0.29, 0.49]), 0.3, 0.5).tolist() == [
        e, n, c, n]

    # An entailment at 0.25 among the contradictions: cutting at 0.25 (it becomes neutral) or
    # at 0.3 (contradiction) both miss one pair; the smaller t_lo wins.
    t = choose_thresholds(torch.tensor([0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7]),
                          torch.tensor([c, c, e, n, n, e, e, e]))
    assert (t.low, t.high, t.accuracy) == (pytest.approx(0.25), pytest.approx(0.5), 7 / 8)

    # Only entailments: everything must be predicted entailment (t_lo = t_hi = lowest score).
    t = choose_thresholds(torch.tensor([0.3, 0.1]), torch.tensor([e, e]))
    assert (t.low, t.high, t.accuracy) == (pytest.approx(0.1), pytest.approx(0.1), 1.0)
    # Only contradictions: both thresholds at +inf (no entailment, no neutral).
    t = choose_thresholds(torch.tensor([0.3, 0.1]), torch.tensor([c, c]))
    assert t.low == t.high == float("inf") and t.as_details()["t_hi"] is None


def test_threshold_search_is_exhaustive_against_brute_force():
    generator = torch.Generator().manual_seed(3)
    for trial in range(5):
        labels = torch.randint(0, 3, (60,), generator=generator)
        # Class-dependent scores, rounded so that equal scores occur.
        sims = torch.round((1 - labels.float()) * 0.3 + torch.randn(60, generator=generator)
                           * 0.4, decimals=1)
        chosen = choose_thresholds(sims, labels)
        candidates = sorted(set(sims.tolist())) + [float("inf")]
        best = max(
            ((float((apply_thresholds(sims, lo, hi) == labels).float().mean()), -a, -b)
             for a, lo in enumerate(candidates) for b, hi in enumerate(candidates) if lo <= hi))
        acc, a, b = best
        assert chosen.accuracy == pytest.approx(acc)
        assert (chosen.low, chosen.high) == (candidates[-a], candidates[-b]), trial


def test_entailment_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (50,), generator=generator)
    pred = torch.where(torch.rand(50, generator=generator) < 0.6, labels,
                       torch.randint(0, 3, (50,), generator=generator))
    ours = entailment_metrics(pred, labels)
    per_class = recall_score(labels, pred, average=None, labels=[0, 1, 2])
    assert ours["acc1"] == pytest.approx(accuracy_score(labels, pred))
    for c, name in enumerate(LABELS):
        assert ours[f"recall_{name}"] == pytest.approx(per_class[c])
    assert ours["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, pred))


# ------------------------------------------------------------------------- SNLI-VE data

def snli_record(image_id: str, caption: str, hypothesis: str, label: str, n: int) -> dict:
    """One line as the SNLI-VE generator writes it: the SNLI record (keys sorted) plus
    Flickr30K_ID."""
    return {"Flickr30K_ID": image_id, "annotator_labels": [label if label != "-" else "neutral"],
            "captionID": f"{image_id}.jpg#{n % 5}", "gold_label": label,
            "pairID": f"{image_id}.jpg#{n % 5}r1{label[:1]}", "sentence1": caption,
            "sentence1_binary_parse": "( ... )", "sentence1_parse": "(ROOT ...)",
            "sentence2": hypothesis, "sentence2_binary_parse": "( ... )",
            "sentence2_parse": "(ROOT ...)"}


def write_snli_ve(root: Path, images_per_split: int = 6, seed: int = 0) -> dict[str, list]:
    """``snli_ve/snli_ve_{train,dev,test}.jsonl`` and ``flickr30k_images/<id>.jpg``; each
    image has one caption and hypotheses of all three labels, a '-' line and a blank line
    are in each file. Returns the labelled records per split."""
    rng = random.Random(seed)
    out = {}
    for s, split in enumerate(("train", "dev", "test")):
        rows, lines = [], []
        for i in range(images_per_split):
            image_id = str(1000092795 + 1000 * s + i)
            write_jpeg(root / "flickr30k_images" / f"{image_id}.jpg", seed=10 * s + i + 1000)
            caption = f"Two people in scene {split}-{i} walk by."
            for h in range(6):
                label = LABELS[(h + i) % 3]
                hypothesis = f"Someone does thing {rng.randrange(40)} in {split}."
                rows.append(snli_record(image_id, caption, hypothesis, label, h))
        rng.shuffle(rows)
        lines = [json.dumps(r) for r in rows]
        lines.insert(3, json.dumps(snli_record("1", "A caption.", "A hypothesis.", "-", 0)))
        lines.insert(5, "")
        path = root / "snli_ve" / f"snli_ve_{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        out[split] = rows
    return out


def image_pair_similarities(root: Path, rows: list[dict]) -> torch.Tensor:
    paths = [root / "flickr30k_images" / f"{r['Flickr30K_ID']}.jpg" for r in rows]
    images, texts = pixel_features(paths, [r["sentence2"] for r in rows])
    return torch.nn.functional.cosine_similarity(images, texts, dim=-1)


def label_tensor(rows: list[dict]) -> torch.Tensor:
    return torch.tensor([LABELS.index(r["gold_label"]) for r in rows])


def test_snli_ve_zeroshot_picks_thresholds_on_dev_only(cli, tmp_path):
    from sklearn.metrics import recall_score

    root = tmp_path / "data"
    rows = write_snli_ve(root)
    res = cli(*run_args(tmp_path, root, "--tasks", "snli-ve-zeroshot"))
    assert res.code == 0, res
    rec = records(tmp_path / "out")["snli-ve-zeroshot"]
    assert rec["num_samples"] == len(rows["test"]) == 36
    assert rec["details"]["skipped_unlabelled"] == {"dev": 1, "test": 1}

    # Reference: features computed here, thresholds from dev alone, applied to test.
    dev_sims = image_pair_similarities(root, rows["dev"])
    t = choose_thresholds(dev_sims, label_tensor(rows["dev"]))
    assert rec["details"]["t_lo"] == pytest.approx(t.low, abs=1e-6)
    assert rec["details"]["t_hi"] == pytest.approx(t.high, abs=1e-6)
    assert rec["metrics"]["dev_acc1"] == pytest.approx(t.accuracy)
    test_labels = label_tensor(rows["test"])
    pred = apply_thresholds(image_pair_similarities(root, rows["test"]), t.low, t.high)
    per_class = recall_score(test_labels, pred, average=None, labels=[0, 1, 2])
    assert rec["metrics"]["acc1"] == pytest.approx(float((pred == test_labels).float().mean()))
    for c, name in enumerate(LABELS):
        assert rec["metrics"][f"recall_{name}"] == pytest.approx(per_class[c])

    # Relabelling test changes test scores but never the thresholds.
    test_file = root / "snli_ve" / "snli_ve_test.jsonl"
    flipped = test_file.read_text().replace('"gold_label": "entailment"', '"gold_label": "x"')
    flipped = flipped.replace('"gold_label": "contradiction"', '"gold_label": "entailment"')
    test_file.write_text(flipped.replace('"gold_label": "x"', '"gold_label": "contradiction"'))
    res = cli(*run_args(tmp_path, root, "--tasks", "snli-ve-zeroshot", out="out2"))
    assert res.code == 0, res
    again = records(tmp_path / "out2")["snli-ve-zeroshot"]
    assert again["details"]["t_lo"] == rec["details"]["t_lo"]
    assert again["details"]["t_hi"] == rec["details"]["t_hi"]
    assert again["metrics"]["recall_entailment"] != rec["metrics"]["recall_entailment"]


def test_transfer_classifier_carries_text_premises_over_to_images():
    """Synthetic embeddings where the 'image' is a noisy copy of its caption: a classifier
    trained on caption premises only classifies image premises well, deterministically."""
    # Tiny steps: one thread avoids waiting on a busy second core (see itra_bench.threads).
    with torch_threads(1):
        _check_transfer_on_synthetic_embeddings()


def _check_transfer_on_synthetic_embeddings() -> None:
    generator = torch.Generator().manual_seed(0)
    dim, n = 16, 600

    def pairs(count: int, premise_noise: float) -> tuple[PairFeatures, PairFeatures, torch.Tensor]:
        captions = torch.randn(count, dim, generator=generator)
        labels = torch.randint(0, 3, (count,), generator=generator)
        other = torch.randn(count, dim, generator=generator)
        hyp = torch.where((labels == ENTAILMENT)[:, None], captions,
                          torch.where((labels == CONTRADICTION)[:, None], -captions, other))
        hyp = hyp + 0.3 * torch.randn(count, dim, generator=generator)
        images = captions + premise_noise * torch.randn(count, dim, generator=generator)
        rows = torch.arange(count)
        return (PairFeatures(captions, hyp, rows, rows), PairFeatures(images, hyp, rows, rows),
                labels)

    train, _, train_y = pairs(n, 0.0)
    dev, _, dev_y = pairs(200, 0.0)
    test_text, test_image, test_y = pairs(300, 0.5)
    config = TransferConfig(hidden_dim=32, epochs=20, lr=3e-3, batch_size=64)
    result = train_transfer_classifier(train, train_y, dev, dev_y, config, seed=1)
    assert result.dev_accuracy > 0.9 and result.best_epoch >= 1
    image_acc = entailment_metrics(predict(result.classifier, test_image), test_y)["acc1"]
    assert image_acc > 0.8
    again = train_transfer_classifier(train, train_y, dev, dev_y, config, seed=1)
    assert torch.equal(predict(again.classifier, test_text), predict(result.classifier, test_text))
    assert again.train_loss == result.train_loss
    other = train_transfer_classifier(train, train_y, dev, dev_y, config, seed=2)
    assert other.train_loss != result.train_loss


@pytest.mark.gpu
def test_transfer_classifier_on_cuda_is_deterministic():
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(40, 8, generator=generator)
    rows = torch.arange(200) % 40
    hyps = torch.randint(0, 40, (200,), generator=generator)
    pairs = PairFeatures(feats, feats, rows, hyps)
    labels = torch.randint(0, 3, (200,), generator=generator)
    config = TransferConfig(hidden_dim=16, epochs=3, batch_size=32)
    runs = [train_transfer_classifier(pairs, labels, pairs, labels, config, seed=0,
                                      device=device) for device in ("cuda", "cuda", "cpu")]
    assert runs[0].train_loss == runs[1].train_loss
    assert runs[0].train_loss == pytest.approx(runs[2].train_loss, rel=1e-4)


def test_snli_ve_transfer_end_to_end(cli, tmp_path):
    root = tmp_path / "data"
    rows = write_snli_ve(root)
    task = tmp_path / "transfer.yaml"
    task.write_text("name: ve-transfer\nprotocol: snli_ve_transfer\n"
                    "train: snli_ve/snli_ve_train.jsonl\ndev: snli_ve/snli_ve_dev.jsonl\n"
                    "test: snli_ve/snli_ve_test.jsonl\nimages: flickr30k_images\n"
                    "hidden_dim: 16\nepochs: 3\nbatch_size: 8\nsuites: [my-ve]\n")
    res = cli(*run_args(tmp_path, root, "--tasks", task, "--seed", "4"))
    assert res.code == 0, res
    rec = records(tmp_path / "out")["ve-transfer"]
    assert rec["main_score"] == "acc1" and rec["num_samples"] == len(rows["test"])
    assert set(rec["metrics"]) >= {"acc1", "mean_per_class_recall", "text_premise_acc1",
                                   *(f"recall_{name}" for name in LABELS)}
    assert rec["details"]["num_train_pairs"] == len(rows["train"])
    assert len(rec["details"]["train_loss"]) == 3 and 1 <= rec["details"]["best_epoch"] <= 3

    # The same classifier, rebuilt here from independently computed features.
    from itra_test_plugin import PixelModel

    model = PixelModel()

    def text_pairs(split_rows):
        caps = sorted({r["sentence1"] for r in split_rows})
        hyps = sorted({r["sentence2"] for r in split_rows})
        return PairFeatures(model.encode_text(caps), model.encode_text(hyps),
                            torch.tensor([caps.index(r["sentence1"]) for r in split_rows]),
                            torch.tensor([hyps.index(r["sentence2"]) for r in split_rows]))

    config = TransferConfig(hidden_dim=16, epochs=3, batch_size=8)
    # Row order inside the feature tables does not matter; pair order does (it seeds batches).
    trained = train_transfer_classifier(text_pairs(rows["train"]), label_tensor(rows["train"]),
                                        text_pairs(rows["dev"]), label_tensor(rows["dev"]),
                                        config, seed=4)
    test_rows = rows["test"]
    paths = [root / "flickr30k_images" / f"{r['Flickr30K_ID']}.jpg" for r in test_rows]
    images, hyps = pixel_features(paths, [r["sentence2"] for r in test_rows])
    idx = torch.arange(len(test_rows))
    pred = predict(trained.classifier, PairFeatures(images, hyps, idx, idx))
    expected = entailment_metrics(pred, label_tensor(test_rows))
    for key, value in expected.items():
        assert rec["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert rec["details"]["train_loss"] == pytest.approx(
        [round(x, 6) for x in trained.train_loss], abs=1e-5)


def test_snli_ve_bad_lines_name_file_and_line(cli, tmp_path):
    root = tmp_path / "data"
    write_snli_ve(root, images_per_split=2)
    dev = root / "snli_ve" / "snli_ve_dev.jsonl"
    lines = dev.read_text().splitlines()
    lines[1] = lines[1].replace('"gold_label": "', '"gold_label": "maybe-')
    dev.write_text("\n".join(lines) + "\n")
    res = cli(*run_args(tmp_path, root, "--tasks", "snli-ve-zeroshot"))
    assert res.code == 2 and f"{dev}, line 2" in res.err and "gold_label" in res.err
    lines[1] = lines[1][:-5]
    dev.write_text("\n".join(lines) + "\n")
    res = cli(*run_args(tmp_path, root, "--tasks", "snli-ve-zeroshot"))
    assert res.code == 2 and f"{dev}, line 2" in res.err and "JSON" in res.err
    with pytest.raises(UserError, match="missing key"):
        from itra_bench.tasks.snli_ve.plugin import read_snli_ve

        dev.write_text('{"Flickr30K_ID": "1", "sentence2": "x", "gold_label": "neutral"}\n')
        read_snli_ve(dev)
    res = cli(*run_args(tmp_path, tmp_path / "nothing", "--tasks", "snli-ve"))
    assert res.code == 2 and "snli_ve_train.jsonl" in res.err and "Flickr30K_ID" in res.err
