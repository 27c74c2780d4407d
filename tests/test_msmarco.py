"""MS MARCO passage ranking: readers, float16 store, faiss search, metrics vs pytrec_eval, and
`itra-bench run` end to end on generated files in MS MARCO's formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval
import torch
import torch.nn.functional as F

from itra_bench.context import RunContext
from itra_bench.errors import UserError
from itra_bench.results import iter_records
from itra_bench.tasks.msmarco.passage_store import PassageStore
from itra_bench.tasks.msmarco.ranking import rank_run, ranking_metrics, search_inner_product
from itra_bench.tasks.msmarco.readers import iter_collection, read_qrels, read_queries

PLUGINS = ("--plugin", "itra_test_plugin", "--plugin", "itra_bench.tasks.msmarco.plugin")
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi".split()
PYTREC_MEASURES = {"recip_rank", "recall_50", "recall_1000", "ndcg_cut_10"}


# -- generated data -----------------------------------------------------------------------

def make_msmarco(root: Path, n_passages: int = 240, n_queries: int = 24, seed: int = 0
                 ) -> dict[str, object]:
    """An MS MARCO folder: pids 0..n-1 (not all in order), queries with 1-3 relevant passages.

    Some queries repeat the text of a relevant passage (the hash text model then ranks it
    first), passages 5/6 and 7/8 are duplicates (exact score ties), and one query's relevant
    passage shares no text with it. The files use tabs inside passages, a CRLF line, a
    blank line, and qrels separated by spaces on some lines.
    """
    rng = np.random.default_rng(seed)
    texts = {pid: " ".join(rng.choice(WORDS, size=6)) for pid in range(n_passages)}
    texts[6], texts[8] = texts[5], texts[7]
    texts[9] = "with\ttabs inside"
    folder = root / "msmarco"
    folder.mkdir(parents=True)
    order = list(range(n_passages))
    order[10], order[11] = order[11], order[10]  # not strictly increasing: duplicate check
    lines = [f"{pid}\t{texts[pid]}\n" for pid in order]
    lines[3] = lines[3].replace("\n", "\r\n")
    lines.insert(20, "\n")
    (folder / "collection.tsv").write_text("".join(lines), encoding="utf-8", newline="")
    queries, qrels = {}, {}
    for q in range(n_queries):
        qid = 1000 + 3 * q
        rel = [int(p) for p in rng.choice(np.arange(10, n_passages), size=1 + q % 3,
                                          replace=False)]
        qrels[qid] = {p: 1 for p in rel}
        queries[qid] = texts[rel[0]] if q % 2 == 0 else f"unrelated query {q}"
    qrels[1000][5] = 1         # tie: duplicates 5 and 6, only 5 relevant
    queries[1000] = texts[5]
    qrels[1003] = {8: 1}       # tie: duplicates 7 and 8, the one with the greater id relevant
    queries[1003] = texts[7]
    qrels[1006][12] = 0        # judged non-relevant
    queries[5] = "a query without judgements"
    (folder / "queries.dev.small.tsv").write_text(
        "".join(f"{q}\t{t}\n" for q, t in queries.items()), encoding="utf-8")
    qrel_lines = [f"{q}{' ' if i % 2 else chr(9)}0\t{p}\t{r}\n"
                  for i, (q, judged) in enumerate(qrels.items()) for p, r in judged.items()]
    (folder / "qrels.dev.small.tsv").write_text("".join(qrel_lines))
    return {"texts": texts, "queries": queries, "qrels": qrels}


def pytrec_means(run: dict, qrels: dict) -> dict[str, float]:
    """pytrec_eval's numbers, averaged over every query with a relevant passage (0 when the
    query is not in the run), MRR on the run cut to its top 10 (in trec_eval's order)."""
    qrels_s = {str(q): {str(p): int(r) for p, r in j.items()} for q, j in qrels.items()}
    run_s = {str(q): {str(p): float(s) for p, s in scores.items()} for q, scores in run.items()}
    cut = {q: {p: run_s[q][p] for p in ranking[:10]} for q, ranking in rank_run(run_s).items()}
    full = pytrec_eval.RelevanceEvaluator(qrels_s, PYTREC_MEASURES).evaluate(run_s)
    top10 = pytrec_eval.RelevanceEvaluator(qrels_s, {"recip_rank"}).evaluate(cut)
    evaluated = [q for q, j in qrels_s.items() if any(r > 0 for r in j.values())]

    def mean(result: dict, measure: str) -> float:
        return sum(result.get(q, {}).get(measure, 0.0) for q in evaluated) / len(evaluated)

    return {"mrr@10": mean(top10, "recip_rank"), "recall@50": mean(full, "recall_50"),
            "recall@1000": mean(full, "recall_1000"), "ndcg@10": mean(full, "ndcg_cut_10")}


def assert_metrics_agree(ours: dict[str, float], reference: dict[str, float]) -> None:
    assert set(ours) == set(reference)
    for name in reference:
        assert ours[name] == pytest.approx(reference[name], abs=1e-9), name


# -- metrics ------------------------------------------------------------------------------

def test_metrics_agree_with_pytrec_eval_on_a_run_with_ties_and_misses():
    rng = np.random.default_rng(1)
    qrels = {
        1: {10: 1, 11: 1, 12: 1},         # several relevant passages
        2: {20: 1},                        # its relevant passage is never retrieved
        3: {30: 1, 31: 0},                 # a judged non-relevant one
        4: {40: 1},                        # ties right at rank 10
        5: {50: 1, 51: 1},                 # relevant beyond rank 50 and beyond 1000
        6: {60: 1},                        # not in the run at all
        7: {70: 0},                        # no relevant passage: not averaged
    }
    run: dict[int, dict[int, float]] = {}
    for q in range(1, 8):
        pool = rng.choice(np.arange(100, 5000), size=1200, replace=False)
        scores = np.round(rng.random(1200), 2)  # two decimals: many exact ties
        run[q] = {int(p): float(s) for p, s in zip(pool, scores, strict=True)}
    run[1].update({10: 0.999, 12: 0.5, 11: 0.5})
    run[3].update({31: 1.5, 30: 0.999})
    tied = sorted(run[4].values(), reverse=True)[9]
    run[4].update({40: tied, 9: tied, 99: tied})  # '99' > '9' > '40' as strings
    run[5][50] = sorted(run[5].values(), reverse=True)[60] - 1e-6  # rank 62
    run[5][51] = -5.0  # last of 1202: beyond rank 1000
    del run[6]

    ours = ranking_metrics(rank_run(run), qrels)
    assert_metrics_agree(ours, pytrec_means(run, qrels))
    assert 0 < ours["mrr@10"] < 1 and 0 < ours["recall@50"] < ours["recall@1000"] < 1


def test_mrr_follows_ms_marco_definition():
    qrels = {1: {5: 1}, 2: {7: 1, 8: 1}, 3: {9: 1}}
    ranked = {1: [4, 5], 2: list(range(100, 110)) + [7], 3: [1, 2, 3, 9]}
    # 1/2 for query 1, 0 for query 2 (rank 11), 1/4 for query 3; divided by all 3 queries.
    assert ranking_metrics(ranked, qrels)["mrr@10"] == pytest.approx((0.5 + 0.25) / 3)
    with pytest.raises(ValueError, match="more than once"):
        ranking_metrics({1: [5, 5]}, qrels)


# -- readers ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "content", "message"), [
    ("collection.tsv", "0\tok\n1 no tab here\n", r"collection.tsv:2: no tab"),
    ("collection.tsv", "0\tok\n\nx1\tbad id\n", r"collection.tsv:3: pid 'x1' is not"),
    ("queries.tsv", "1\ta\n-4\tb\n", r"queries.tsv:2: qid '-4' is not"),
    ("queries.tsv", "1\ta\n1\tb\n", r"queries.tsv:2: qid 1 already appeared on line 1"),
    ("qrels.tsv", "1 0 5 1\n1 0 5\n", r"qrels.tsv:2: 3 columns"),
    ("qrels.tsv", "1 0 5 1\n2\t0\t6\tyes\n", r"qrels.tsv:2: relevance 'yes'"),
])
def test_malformed_lines_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    reader = {"collection.tsv": lambda p: list(iter_collection(p)),
              "queries.tsv": read_queries, "qrels.tsv": read_qrels}[name]
    with pytest.raises(UserError, match=message):
        reader(path)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "collection.tsv"
    path.write_bytes(b"0\tfine\n1\tbad \xff byte\n")
    with pytest.raises(UserError, match=r"collection.tsv:2: not valid UTF-8"):
        list(iter_collection(path))


# -- store and search ---------------------------------------------------------------------

def test_flat_search_in_blocks_equals_brute_force_and_ivf_with_all_cells(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    store = PassageStore(tmp_path / "s", "key")
    store.start(np.arange(500, dtype=np.int64))
    for start in range(0, 500, 64):
        store.append(vectors[start:start + 64])
    store.finish()
    stored = store.read_block(0, 500)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    queries = rng.standard_normal((37, 16)).astype(np.float32)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = np.argsort(-(qn.astype(np.float64) @ stored.T.astype(np.float64)), axis=1)[:, :30]

    scores, rows = search_inner_product(store, queries, 30, block_rows=77, query_chunk=10)
    assert scores.shape == rows.shape == (37, 30)
    assert np.array_equal(rows, expected)
    assert np.all(np.diff(scores, axis=1) <= 0)
    _, ivf_rows = search_inner_product(store, queries, 30, index="ivf", nlist=4, nprobe=4)
    assert np.array_equal(ivf_rows, expected)
    with pytest.raises(ValueError, match="nlist=900 is larger"):
        search_inner_product(store, queries, 30, index="ivf", nlist=900)


class _FailingModel(torch.nn.Module):
    """A hash text encoder that can be told to fail after some batches (an interrupt)."""

    def __init__(self, fail_after: int | None) -> None:
        super().__init__()
        self.fail_after, self.batches, self.texts = fail_after, 0, 0

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if self.fail_after is not None and self.batches == self.fail_after:
            raise KeyboardInterrupt
        self.batches += 1
        self.texts += len(texts)
        rows = [torch.randn(8, generator=torch.Generator().manual_seed(hash(t) % 2**31))
                for t in texts]
        return torch.stack(rows)


def test_interrupted_encoding_resumes_from_last_checkpoint(tmp_path):
    from itra_bench.tasks.msmarco.plugin import encode_collection

    make_msmarco(tmp_path, n_passages=100)
    collection = tmp_path / "msmarco" / "collection.tsv"
    pids = np.array([pid for pid, _ in iter_collection(collection)], dtype=np.int64)
    rows = np.arange(0, 100, 3)
    ctx = RunContext(batch_size=4)

    store = PassageStore(tmp_path / "store", "k1")
    store.start(pids[rows], rows)
    with pytest.raises(KeyboardInterrupt):
        encode_collection(_FailingModel(fail_after=3), collection, store, ctx)
    reopened = PassageStore(tmp_path / "store", "k1")
    assert reopened.rows_done == 12 and not reopened.complete
    model = _FailingModel(None)
    encode_collection(model, collection, reopened, ctx)
    assert model.texts == len(rows) - 12 and reopened.complete

    fresh = PassageStore(tmp_path / "fresh", "k2")
    fresh.start(pids[rows], rows)
    encode_collection(_FailingModel(None), collection, fresh, ctx)
    assert np.array_equal(reopened.read_block(0, len(rows)), fresh.read_block(0, len(rows)))
    assert np.array_equal(reopened.pids(np.arange(len(rows))), pids[rows])
    stored = np.load(fresh.embeddings_path, mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape == (len(rows), 8)
    # another key (model or collection changed) starts over
    assert not PassageStore(tmp_path / "store", "other").started


# -- end to end ---------------------------------------------------------------------------

def run_args(tmp_path: Path, *extra: str) -> list[object]:
    return ["run", "--model", "pixel:text-only", *PLUGINS, "--data-root", tmp_path,
            "--output", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--workers", "0",
            "--batch-size", "16", "--no-progress", "--tasks", "msmarco-passage-dev", *extra]


def reference_run(data: dict, k: int = 1000) -> dict[int, dict[int, float]]:
    """Cosine scores of the test model's float16-stored passage vectors, by brute force."""
    from itra_test_plugin import PixelModel

    model = PixelModel(modalities=frozenset({"text"}))
    pids = sorted(data["texts"])
    p = F.normalize(model.encode_text([data["texts"][i] for i in pids]), dim=-1)
    p = F.normalize(p.half().float(), dim=-1).double()
    qids = [q for q, j in data["qrels"].items() if any(j.values())]
    q = F.normalize(model.encode_text([data["queries"][i] for i in qids]), dim=-1).double()
    scores = (q @ p.T).float()
    top = scores.topk(min(k, len(pids)), dim=1)
    return {qid: {pids[int(i)]: float(s) for s, i in zip(top.values[n], top.indices[n],
                                                          strict=True)}
            for n, qid in enumerate(qids)}


def records(out: Path) -> dict[str, dict]:
    return {r["variant"]: r for _, r in iter_records(out)}


def test_run_agrees_with_pytrec_eval_and_reuses_the_store(cli, tmp_path):
    data = make_msmarco(tmp_path)
    res = cli(*run_args(tmp_path, "--task-option", "block_rows=50",
                        "--task-option", "save_run=1"))
    assert res.code == 0, res
    rec = records(tmp_path / "out")["flat"]
    assert rec["main_score"] == "mrr@10" and rec["num_samples"] == 24
    assert rec["details"]["num_passages"] == 240 and rec["suites"] == ["msmarco", "text"]
    assert_metrics_agree(rec["metrics"], pytrec_means(reference_run(data), data["qrels"]))
    assert rec["metrics"]["mrr@10"] > 0.5  # queries that repeat a passage find it first

    run_lines = Path(rec["details"]["run_file"]).read_text().splitlines()
    assert len(run_lines) == 24 * 240 and run_lines[0].split("\t")[2] == "1"
    first = {int(q): int(p) for q, p, r in (ln.split("\t") for ln in run_lines) if r == "1"}
    assert first[1003] == 8  # the tie 7/8 resolved as trec_eval resolves it

    store = Path(rec["details"]["passage_store"])
    meta = json.loads((store / "meta.json").read_text())
    assert meta["complete"] and meta["rows_done"] == 240
    written = [(store / f).stat().st_mtime_ns for f in ("meta.json", "embeddings.npy")]
    res = cli(*run_args(tmp_path, "--overwrite"))
    assert res.code == 0, res
    # the second run only read the store
    assert [(store / f).stat().st_mtime_ns for f in ("meta.json", "embeddings.npy")] == written
    assert records(tmp_path / "out")["flat"]["metrics"] == rec["metrics"]


def test_max_passages_keeps_every_judged_passage(cli, tmp_path):
    data = make_msmarco(tmp_path)
    judged = {p for j in data["qrels"].values() for p in j}
    res = cli(*run_args(tmp_path, "--max-passages", "100", "--no-cache",
                        "--task-option", "index=ivf", "--task-option", "nlist=4",
                        "--task-option", "nprobe=4"))
    assert res.code == 0, res
    rec = records(tmp_path / "out")["ivf4-nprobe4-max100"]
    assert rec["details"]["num_passages"] == 100 and rec["details"]["max_passages"] == 100
    assert rec["metrics"]["recall@1000"] == 1.0  # every judged passage is in the subset
    assert not list((tmp_path / "out").rglob(".passage-store-*"))  # no cache: cleaned up

    res = cli(*run_args(tmp_path, "--task-option", f"max_passages={len(judged) - 5}"))
    assert res.code == 0, res
    rec = records(tmp_path / "out")[f"flat-max{len(judged) - 5}"]
    assert rec["details"]["num_passages"] == len(judged)
    assert rec["metrics"]["recall@1000"] == 1.0


def test_task_file_with_own_files_and_clear_errors(cli, tmp_path):
    make_msmarco(tmp_path / "mine")
    folder = tmp_path / "mine" / "msmarco"
    (folder / "collection.tsv").rename(folder / "passages.tsv")
    task_file = tmp_path / "mine.yaml"
    task_file.write_text(f"name: my-ranking\nprotocol: msmarco_passage\n"
                         f"collection: {folder / 'passages.tsv'}\n"
                         f"queries: {folder / 'queries.dev.small.tsv'}\n"
                         f"qrels: {folder / 'qrels.dev.small.tsv'}\n")
    args = [a if a != "msmarco-passage-dev" else task_file for a in run_args(tmp_path)]
    res = cli(*args)
    assert res.code == 0, res
    assert records(tmp_path / "out")["flat"]["task"] == "my-ranking"

    task_file.write_text(task_file.read_text() + "nprob: 3\n")
    res = cli(*args)
    assert res.code == 2 and "unknown key 'nprob'" in res.err and "nprobe" in res.err

    res = cli(*run_args(tmp_path / "nothing"))
    assert res.code == 2 and "collection.tsv" in res.err

    with (folder / "passages.tsv").open("a") as f:
        f.write("17\tid 17 again\n")
    task_file.write_text("\n".join(task_file.read_text().splitlines()[:-1]) + "\n")
    res = cli(*args, "--overwrite")
    assert res.code == 2 and "pid 17 appears 2 times" in res.err, res
