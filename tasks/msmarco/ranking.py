"""Passage ranking: exact or IVF inner-product search with faiss over an on-disk vector store,
and the ranking metrics of MS MARCO (MRR@10) and TREC (recall@k, nDCG@k).

Definitions (``Q`` = the queries of the qrels with at least one passage of relevance > 0;
a query of ``Q`` missing from the run scores 0 on every metric):

- ``mrr@10``: mean over ``Q`` of ``1 / r``, ``r`` the 1-based rank of the first relevant
  passage among the first 10 of the ranking, 0 if none is there (MS MARCO's official
  ``ms_marco_eval.py``: the sum divided by the number of queries with judgements);
- ``recall@k``: mean over ``Q`` of (relevant passages among the first ``k``) / (relevant
  passages of the query) (trec_eval ``recall_k``);
- ``ndcg@k``: mean over ``Q`` of DCG@k / IDCG@k with binary gains (1 for relevance > 0),
  ``DCG@k = sum_{i<=k} gain_i / log2(i + 1)`` and IDCG@k the DCG of a perfect ranking
  (trec_eval ``ndcg_cut_k`` on binary qrels).

Every metric is a mean over ``Q`` of a per-query value: the metrics carry those values
(per-sample outcomes of kind ``means``, one row per query of ``Q`` in the qrels' order).

Ties in score are ordered as trec_eval orders them (by passage id, as strings, descending),
so a run file of these scores gives trec_eval's and pytrec_eval's numbers, and its rank column
gives MS MARCO's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np

from itra_bench.sample_outcomes import Metrics, SampleOutcomes

MRR_CUTOFF = 10


def _trec_order(items: Iterable[tuple[Hashable, float]]) -> list[Hashable]:
    """Ids by score descending, ties by id (as a string) descending, as trec_eval sorts."""
    return [pid for pid, _ in sorted(items, key=lambda x: (x[1], str(x[0])), reverse=True)]


def rank_run(run: Mapping[Hashable, Mapping[Hashable, float]]) -> dict[Hashable, list[Hashable]]:
    """Rankings of a scored run ``{qid: {pid: score}}`` (pytrec_eval's run format)."""
    return {qid: _trec_order(scores.items()) for qid, scores in run.items()}


def ranking_metrics(ranked: Mapping[Hashable, Sequence[Hashable]],
                    qrels: Mapping[Hashable, Mapping[Hashable, int]],
                    recall_cutoffs: Sequence[int] = (50, 1000),
                    ndcg_cutoffs: Sequence[int] = (10,)) -> Metrics:
    """``mrr@10``, ``recall@k`` and ``ndcg@k`` (module docstring) of rankings ``{qid: [pid,
    ...]}`` (best first, each pid at most once) against qrels ``{qid: {pid: relevance}}``,
    carrying each metric's per-query values."""
    relevant = {q: {p for p, r in judged.items() if r > 0} for q, judged in qrels.items()}
    relevant = {q: rel for q, rel in relevant.items() if rel}
    if not relevant:
        raise ValueError("the qrels judge no passage relevant (relevance > 0): nothing to score")
    ndcg_norm = [1.0 / math.log2(i + 2) for i in range(max(ndcg_cutoffs, default=0))]
    per_query: dict[str, list[float]] = {f"mrr@{MRR_CUTOFF}": []}
    per_query.update({f"recall@{k}": [] for k in recall_cutoffs})
    per_query.update({f"ndcg@{k}": [] for k in ndcg_cutoffs})
    depth = max(MRR_CUTOFF, *recall_cutoffs, *ndcg_cutoffs)
    for qid, rel in relevant.items():
        ranking = ranked.get(qid, ())
        top = list(ranking[:depth])
        if len(set(ranking)) != len(ranking):
            raise ValueError(f"the ranking of query {qid!r} lists a passage more than once")
        hits = [p in rel for p in top]
        first = next((i for i, h in enumerate(hits[:MRR_CUTOFF]) if h), None)
        per_query[f"mrr@{MRR_CUTOFF}"].append(0.0 if first is None else 1.0 / (first + 1))
        for k in recall_cutoffs:
            per_query[f"recall@{k}"].append(sum(hits[:k]) / len(rel))
        for k in ndcg_cutoffs:
            dcg = sum(ndcg_norm[i] for i, h in enumerate(hits[:k]) if h)
            ideal = sum(ndcg_norm[:min(k, len(rel))])
            per_query[f"ndcg@{k}"].append(dcg / ideal)
    # Summed in query order, as MS MARCO's evaluation sums.
    return Metrics({name: sum(values) / len(values) for name, values in per_query.items()},
                   SampleOutcomes("means", {name: np.array(values, dtype=np.float64)
                                            for name, values in per_query.items()}))


def ranked_lists(scores: np.ndarray, rows: np.ndarray, pids: Callable[[np.ndarray], np.ndarray],
                 qids: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Rankings ``{qid: [pid, ...]}`` from search results ``scores``/``rows`` ``[Q, k]`` (rows
    -1 are empty slots); ``pids(rows)`` maps store rows to passage ids. Ties are re-ordered as
    trec_eval orders them."""
    out: dict[Hashable, list[int]] = {}
    for i, qid in enumerate(qids):
        valid = rows[i] >= 0
        s, p = scores[i][valid], np.asarray(pids(rows[i][valid]))
        if len(s) > 1 and np.any(s[1:] == s[:-1]):
            out[qid] = [int(x) for x in _trec_order(zip(p.tolist(), s.tolist(), strict=True))]
        else:
            out[qid] = p.tolist()
    return out


class VectorSource(Protocol):
    """Row-addressable float vectors on disk
    (:class:`itra_bench.tasks.msmarco.passage_store.PassageStore`)."""

    num_passages: int
    dim: int

    def read_block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new float32 array ``[stop - start, dim]``."""
        ...

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The given (sorted) rows as a new float32 array."""
        ...


def faiss_gpu_available() -> bool:
    """Whether the installed faiss was built with GPU support and sees a GPU."""
    import faiss

    return hasattr(faiss, "index_cpu_to_all_gpus") and getattr(faiss, "get_num_gpus",
                                                                lambda: 0)() > 0


def _merge_topk(best_d: np.ndarray, best_i: np.ndarray, d: np.ndarray, i: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest of both candidate sets per row; on equal scores earlier rows first."""
    all_d = np.concatenate([best_d, d], axis=1)
    all_i = np.concatenate([best_i, i], axis=1)
    order = np.argsort(-all_d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_d, order, 1), np.take_along_axis(all_i, order, 1)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def search_inner_product(source: VectorSource, queries: np.ndarray, k: int, *,
                         index: str = "flat", nlist: int = 4096, nprobe: int = 32,
                         block_rows: int = 262_144, query_chunk: int = 4096,
                         use_gpu: bool = False, gpu: int | None = None, seed: int = 0,
                         advance: Callable[[int], None] | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` passages of each query by cosine similarity: ``(scores, rows)``, ``[Q, k']``
    float32 and int64 with ``k' = min(k, num_passages)``, best first.

    Queries and passages are L2-normalised here, so inner product is cosine similarity.

    - ``index="flat"``: exact search with ``faiss.IndexFlatIP``, one block of ``block_rows``
      passages at a time (only one block is in memory), each block searched by
      ``query_chunk`` queries and merged into the running top-k.
    - ``index="ivf"``: ``faiss.IndexIVFFlat`` with ``nlist`` cells trained on a sample of up
      to ``64 * nlist`` passages (drawn with ``seed``), searched with ``nprobe`` cells:
      approximate, and the whole index (float32) is held in memory.

    ``use_gpu`` moves the index to every GPU with ``faiss.index_cpu_to_all_gpus``, or to GPU
    ``gpu`` alone when given (one per rank of a distributed job; faiss with GPU support
    only). ``advance(n)`` is called as passages are searched or added.
    """
    import faiss

    n, d = source.num_passages, source.dim
    if n == 0:
        raise ValueError("no passages to search")
    if queries.ndim != 2 or queries.shape[1] != d:
        raise ValueError(f"queries must be [count, {d}], got shape {tuple(queries.shape)}")
    if index not in ("flat", "ivf"):
        raise ValueError(f"index must be 'flat' or 'ivf', got {index!r}")
    if k < 1 or block_rows < 1 or query_chunk < 1:
        raise ValueError("k, block_rows and query_chunk must be positive")
    queries = _normalise(queries)
    k = min(k, n)
    advance = advance or (lambda _: None)

    def on_device(ix: faiss.Index) -> faiss.Index:
        if not use_gpu:
            return ix
        if gpu is None:
            return faiss.index_cpu_to_all_gpus(ix)
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), gpu, ix)

    def search_chunks(ix: faiss.Index, kk: int) -> tuple[np.ndarray, np.ndarray]:
        parts = [ix.search(queries[s:s + query_chunk], kk)
                 for s in range(0, len(queries), query_chunk)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    if index == "flat":
        best_d = np.empty((len(queries), 0), np.float32)
        best_i = np.empty((len(queries), 0), np.int64)
        for start in range(0, n, block_rows):
            block = _normalise(source.read_block(start, min(n, start + block_rows)))
            ix = faiss.IndexFlatIP(d)
            ix.add(block)
            ix = on_device(ix)
            bd, bi = search_chunks(ix, min(k, len(block)))
            best_d, best_i = _merge_topk(best_d, best_i, bd, bi + start, k)
            del ix, block
            advance(min(block_rows, n - start))
        return best_d, best_i

    if nlist < 1 or nprobe < 1:
        raise ValueError(f"nlist and nprobe must be positive, got {nlist} and {nprobe}")
    if nlist > n:
        raise ValueError(f"IVF nlist={nlist} is larger than the {n} passages: use a smaller "
                         "nlist (about sqrt(passages) to 4*sqrt(passages)) or index=flat")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))
    quantizer = faiss.IndexFlatIP(d)
    ix = on_device(faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT))
    ix.train(_normalise(source.read_rows(sample)))
    for start in range(0, n, block_rows):
        ix.add(_normalise(source.read_block(start, min(n, start + block_rows))))
        advance(min(block_rows, n - start))
    try:
        ix.nprobe = nprobe
    except AttributeError:  # GPU index wrappers of older faiss versions
        faiss.GpuParameterSpace().set_index_parameter(ix, "nprobe", nprobe)
    return search_chunks(ix, k)
