"""Per-sample outcomes of the text, ranking, VQA and entailment tasks, end to end: each task
run through `itra-bench run` stores a samples file whose hash its result records, whose
outcomes recompute the reported metrics exactly, and whose rows are what an independent
reference (scipy, pytrec_eval, the official VQA accuracy, the pixel model's own features)
gives per sample."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval
import torch
from scipy.stats import pearsonr, spearmanr
from test_coco_snli_ve import (
    image_pair_similarities,
    label_tensor,
    pixel_features,
    write_snli_ve,
)
from test_msmarco import make_msmarco, reference_run
from test_tapc import VAL, write_vqav2
from text_data import sts_pairs, wiki_triplets, write_senteval_sts, write_triplets

from itra_bench.results import iter_records
from itra_bench.sample_outcomes import SampleOutcomes, read_outcomes
from itra_bench.tasks.msmarco.ranking import rank_run
from itra_bench.tasks.snli_ve.entailment import (
    LABELS,
    PairFeatures,
    TransferConfig,
    apply_thresholds,
    choose_thresholds,
    predict,
    train_transfer_classifier,
)
from itra_bench.tasks.tapc.vqa_accuracy import vqa_accuracy

TEXT_PLUGINS = ("--plugin", "itra_bench.tasks.sts.plugin",
                "--plugin", "itra_bench.tasks.wordsim.plugin",
                "--plugin", "itra_bench.tasks.wikisections.plugin")


def run(cli, tmp_path: Path, data_root: Path, *tasks: object, model: str = "pixel",
        plugins: tuple[str, ...] = TEXT_PLUGINS, extra: tuple = ()):
    return cli("run", "--model", model, *plugins, "--plugin", "itra_test_plugin",
               "--tasks", *tasks, "--data-root", data_root, "--output", tmp_path / "out",
               "--cache-dir", tmp_path / "cache", "--workers", "0", "--no-progress", *extra)


def stored(out: Path, task: str, kind: str, also: tuple[str, ...] = ()
           ) -> tuple[dict, SampleOutcomes]:
    """The result of ``task`` and its outcomes, after checking the stored file against the
    result's hash, the interval around the main score, and that the outcomes recompute the
    main score and the metrics ``also`` to the runner's tolerance."""
    found = [(p, r) for p, r in iter_records(out) if r["task"] == task]
    assert len(found) == 1, found
    path, rec = found[0]
    meta = rec.get("samples")
    assert isinstance(meta, dict), f"{task}: no per-sample outcomes in {path}"
    data = (path.parent / meta["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    assert meta["kind"] == kind
    value = rec["main_score_value"]
    ci = rec["main_score_interval"]
    assert ci is not None and ci["low"] <= value <= ci["high"], ci
    outcomes = read_outcomes(path, rec)
    assert outcomes.kind == kind and meta["units"] == outcomes.units
    for metric in (rec["main_score"], *also):
        assert outcomes.value(metric) == pytest.approx(rec["metrics"][metric], rel=1e-9,
                                                       abs=1e-12), metric
    return rec, outcomes


def pixel_cosines(first: list[str], second: list[str]) -> np.ndarray:
    from itra_test_plugin import PixelModel

    model = PixelModel()
    return torch.nn.functional.cosine_similarity(
        model.encode_text(first).double(), model.encode_text(second).double()).numpy()


# ---------------------------------------------------------------------------- STS


def test_sts_outcomes_are_the_pooled_pairs_and_give_scipys_spearman(cli, tmp_path):
    """STS13's three files (an unscored pair, repeated pairs: tied system and gold scores):
    the outcomes are every scored pair in file order, and scipy's correlations of them are
    the reported pooled spearman and pearson."""
    root = tmp_path / "data"
    folder = root / "STS" / "STS13-en-test"
    expected_pairs: list[tuple[str, str, float]] = []
    for k, name in enumerate(("FNWN", "headlines", "OnWN")):
        pairs: list = list(sts_pairs(8 + 2 * k, seed=30 + k))
        pairs += [pairs[0], pairs[1]]  # identical pairs: tied cosines and tied gold scores
        pairs[2] = (pairs[2][0], pairs[2][1], None)  # empty gold line: not scored
        write_senteval_sts(folder, name, pairs)
        expected_pairs += [p for p in pairs if p[2] is not None]
    res = run(cli, tmp_path, root, "sts13")
    assert res.code == 0, res
    rec, outcomes = stored(tmp_path / "out", "sts13", "correlation", also=("pearson",))
    gold = np.array([s for _, _, s in expected_pairs])
    assert rec["num_samples"] == len(gold) == outcomes.units
    assert np.array_equal(outcomes.arrays["gold"], gold)
    pred = outcomes.arrays["pred"]
    assert pred.dtype == np.float64
    assert np.allclose(pred, pixel_cosines([a for a, _, _ in expected_pairs],
                                           [b for _, b, _ in expected_pairs]), atol=1e-6)
    assert len(np.unique(pred)) < len(pred)  # the repeated pairs tie
    assert rec["metrics"]["spearman"] == pytest.approx(spearmanr(pred, gold)[0], abs=1e-12)
    assert rec["metrics"]["pearson"] == pytest.approx(pearsonr(pred, gold)[0], abs=1e-12)


def test_sts_protocol_attaches_outcomes_to_its_metrics():
    from itra_bench.protocols.similarity import correlation, sts_correlations

    g = torch.Generator().manual_seed(0)
    system = [torch.rand(5, generator=g).double(), torch.rand(7, generator=g).double()]
    gold = [torch.tensor([1.0, 2, 2, 3, 1]), torch.rand(7, generator=g)]
    metrics = sts_correlations(system, gold)
    assert isinstance(metrics, dict) and metrics.samples.kind == "correlation"
    assert metrics.samples.value("spearman") == pytest.approx(metrics["spearman"], rel=1e-12)
    assert np.array_equal(metrics.samples.arrays["pred"], torch.cat(system).numpy())
    c = correlation(system[0], gold[0])
    assert c.samples is not None and c.samples.value("pearson") == pytest.approx(c.pearson)
    # A model that scores every pair alike has no correlation: no outcomes to resample.
    flat = sts_correlations([torch.ones(4)], [torch.tensor([1.0, 2, 3, 4])])
    assert np.isnan(flat["spearman"]) and flat.samples is None


# ---------------------------------------------------------------------------- word similarity


def test_wordsim_outcomes_cover_exactly_the_usable_pairs(cli, tmp_path):
    root = tmp_path / "data"
    (root / "wordsim").mkdir(parents=True)
    rows = [("cord", "smile", 0.02), ("rooster", "voyage", 0.04), ("noon", "string", 0.04),
            ("gem", "jewel", 3.94), ("car", "automobile", 3.92), ("coast", "shore", 3.6),
            ("gem", "jewel", 3.94)]
    lines = [f"{a}\t{b}\t{s}" for a, b, s in rows]
    lines[2:2] = ["# a comment", "broken\tline", "x\ty\tn/a", ""]  # never scored
    (root / "wordsim" / "EN-RG-65.txt").write_text("\n".join(lines) + "\n")
    res = run(cli, tmp_path, root, "rg65")
    assert res.code == 0, res
    rec, outcomes = stored(tmp_path / "out", "rg65", "correlation", also=("pearson",))
    gold = np.array([s for _, _, s in rows])
    assert rec["num_samples"] == outcomes.units == len(rows)
    assert np.array_equal(outcomes.arrays["gold"], gold)
    pred = outcomes.arrays["pred"]
    assert np.allclose(pred, pixel_cosines([a for a, _, _ in rows], [b for _, b, _ in rows]),
                       atol=1e-6)
    assert rec["metrics"]["spearman"] == pytest.approx(spearmanr(pred, gold)[0], abs=1e-12)


# ---------------------------------------------------------------------------- wiki sections


def test_wikisections_outcomes_are_per_triplet_hits_ties_wrong(cli, tmp_path):
    root = tmp_path / "data"
    triplets = wiki_triplets(12, seed=3)
    triplets[4] = (triplets[4][0], triplets[4][1], triplets[4][1])  # a tie: counts wrong
    write_triplets(root / "wikipedia-sections" / "test.csv", triplets)
    res = run(cli, tmp_path, root, "wikisections")
    assert res.code == 0, res
    rec, outcomes = stored(tmp_path / "out", "wikisections-test", "means")
    hits = outcomes.arrays["acc1"]
    assert hits.shape == (12,) and set(np.unique(hits)) <= {0.0, 1.0}
    assert hits[4] == 0 and rec["details"]["ties"] >= 1
    assert int(hits.sum()) == rec["details"]["correct"]
    anchors, positives, negatives = map(list, zip(*triplets, strict=True))
    expected = pixel_cosines(anchors, positives) > pixel_cosines(anchors, negatives)
    assert np.array_equal(hits, expected.astype(np.float64))


# ---------------------------------------------------------------------------- MS MARCO


def pytrec_per_query(run_scores: dict, qrels: dict) -> dict[str, list[float]]:
    """pytrec_eval's value of each metric per query with a relevant passage, in qrels order
    (MRR on the run cut to its top 10, as MS MARCO's evaluation does)."""
    qrels_s = {str(q): {str(p): int(r) for p, r in j.items()} for q, j in qrels.items()}
    run_s = {str(q): {str(p): float(s) for p, s in sc.items()} for q, sc in run_scores.items()}
    cut = {q: {p: run_s[q][p] for p in ranking[:10]} for q, ranking in rank_run(run_s).items()}
    full = pytrec_eval.RelevanceEvaluator(
        qrels_s, {"recall_50", "recall_1000", "ndcg_cut_10"}).evaluate(run_s)
    top10 = pytrec_eval.RelevanceEvaluator(qrels_s, {"recip_rank"}).evaluate(cut)
    evaluated = [q for q, j in qrels_s.items() if any(r > 0 for r in j.values())]
    pick = {"mrr@10": (top10, "recip_rank"), "recall@50": (full, "recall_50"),
            "recall@1000": (full, "recall_1000"), "ndcg@10": (full, "ndcg_cut_10")}
    return {name: [res.get(q, {}).get(measure, 0.0) for q in evaluated]
            for name, (res, measure) in pick.items()}


def test_msmarco_outcomes_are_pytrec_evals_per_query_values(cli, tmp_path):
    data = make_msmarco(tmp_path)
    res = cli("run", "--model", "pixel:text-only", "--plugin", "itra_test_plugin",
              "--plugin", "itra_bench.tasks.msmarco.plugin", "--data-root", tmp_path,
              "--output", tmp_path / "out", "--cache-dir", tmp_path / "cache",
              "--workers", "0", "--batch-size", "16", "--no-progress",
              "--tasks", "msmarco-passage-dev")
    assert res.code == 0, res
    rec, outcomes = stored(tmp_path / "out", "msmarco-passage-dev", "means",
                           also=("recall@50", "recall@1000", "ndcg@10"))
    assert sorted(outcomes.arrays) == sorted(rec["metrics"])
    assert outcomes.units == rec["num_samples"] == 24
    reference = pytrec_per_query(reference_run(data), data["qrels"])
    for name, values in reference.items():
        assert outcomes.arrays[name] == pytest.approx(values, abs=1e-9), name


def test_ranking_protocol_gives_zero_for_a_query_missing_from_the_run():
    from itra_bench.tasks.msmarco.ranking import ranking_metrics

    metrics = ranking_metrics({1: [5, 6, 7]}, {1: {7: 1}, 2: {3: 1}, 3: {4: 0}})
    arrays = metrics.samples.arrays
    assert metrics.samples.kind == "means"
    assert arrays["mrr@10"].tolist() == [1 / 3, 0.0]
    assert arrays["recall@50"].tolist() == [1.0, 0.0]


# ---------------------------------------------------------------------------- TAP-C VQA


def test_tapc_outcomes_are_per_question_vqa_accuracy(cli, tmp_path):
    root = tmp_path / "data"
    write_vqav2(root)
    res = run(cli, tmp_path, root, "tapc-vqav2-val",
              plugins=("--plugin", "itra_bench.tasks.tapc.plugin"))
    assert res.code == 0, res
    rec, outcomes = stored(tmp_path / "out", "tapc-vqav2-val", "means")
    assert sorted(outcomes.arrays) == ["vqa_acc"]
    predictions = json.loads(Path(rec["details"]["predictions"]).read_text())
    by_id = {p["question_id"]: p["answer"] for p in predictions}
    expected = [vqa_accuracy(by_id[qid], answers) for qid, _, _, _, answers, *_ in VAL]
    assert outcomes.arrays["vqa_acc"].tolist() == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------- SNLI-VE


SNLI_PLUGINS = ("--plugin", "itra_bench.tasks.snli_ve.plugin")


def test_snli_ve_zeroshot_outcomes_are_per_pair_hits(cli, tmp_path):
    root = tmp_path / "data"
    rows = write_snli_ve(root)
    res = run(cli, tmp_path, root, "snli-ve-zeroshot", plugins=SNLI_PLUGINS)
    assert res.code == 0, res
    rec, outcomes = stored(tmp_path / "out", "snli-ve-zeroshot", "means")
    assert sorted(outcomes.arrays) == ["acc1"] and outcomes.units == 36
    t = choose_thresholds(image_pair_similarities(root, rows["dev"]), label_tensor(rows["dev"]))
    pred = apply_thresholds(image_pair_similarities(root, rows["test"]), t.low, t.high)
    hits = (pred == label_tensor(rows["test"])).double().numpy()
    assert np.array_equal(outcomes.arrays["acc1"], hits)
    # Exact, not float32-rounded: the runner compares to 1e-9.
    assert rec["metrics"]["acc1"] == hits.sum() / len(hits)


def test_snli_ve_transfer_outcomes_are_per_pair_hits(cli, tmp_path):
    from itra_test_plugin import PixelModel

    root = tmp_path / "data"
    rows = write_snli_ve(root)
    task = tmp_path / "transfer.yaml"
    task.write_text("name: ve-transfer\nprotocol: snli_ve_transfer\n"
                    "train: snli_ve/snli_ve_train.jsonl\ndev: snli_ve/snli_ve_dev.jsonl\n"
                    "test: snli_ve/snli_ve_test.jsonl\nimages: flickr30k_images\n"
                    "hidden_dim: 16\nepochs: 3\nbatch_size: 8\n")
    res = run(cli, tmp_path, root, task, plugins=SNLI_PLUGINS, extra=("--seed", "4"))
    assert res.code == 0, res
    rec, outcomes = stored(tmp_path / "out", "ve-transfer", "means")
    assert sorted(outcomes.arrays) == ["acc1"]

    model = PixelModel()

    def text_pairs(split_rows):
        caps = sorted({r["sentence1"] for r in split_rows})
        hyps = sorted({r["sentence2"] for r in split_rows})
        return PairFeatures(model.encode_text(caps), model.encode_text(hyps),
                            torch.tensor([caps.index(r["sentence1"]) for r in split_rows]),
                            torch.tensor([hyps.index(r["sentence2"]) for r in split_rows]))

    trained = train_transfer_classifier(
        text_pairs(rows["train"]), label_tensor(rows["train"]), text_pairs(rows["dev"]),
        label_tensor(rows["dev"]), TransferConfig(hidden_dim=16, epochs=3, batch_size=8),
        seed=4)
    test_rows = rows["test"]
    paths = [root / "flickr30k_images" / f"{r['Flickr30K_ID']}.jpg" for r in test_rows]
    images, hyps = pixel_features(paths, [r["sentence2"] for r in test_rows])
    idx = torch.arange(len(test_rows))
    pred = predict(trained.classifier, PairFeatures(images, hyps, idx, idx))
    hits = (pred == label_tensor(test_rows)).double().numpy()
    assert np.array_equal(outcomes.arrays["acc1"], hits)


def test_entailment_metrics_are_exact_fractions_with_outcomes():
    from itra_bench.tasks.snli_ve.entailment import entailment_metrics

    labels = torch.tensor([0, 1, 2] * 12 + [0])
    pred = labels.clone()
    pred[::3] = 2
    metrics = entailment_metrics(pred, labels)
    hits = (pred == labels).double().numpy()
    assert metrics["acc1"] == hits.sum() / len(hits)  # 24/37 exactly, not float32's
    assert metrics.samples.kind == "means"
    assert np.array_equal(metrics.samples.arrays["acc1"], hits)
    assert metrics[f"recall_{LABELS[1]}"] == 1.0
