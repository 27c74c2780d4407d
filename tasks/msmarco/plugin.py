"""MS MARCO passage ranking (dev, small): a text encoder embeds 8.8M passages and 6,980 queries;
passages are ranked by cosine similarity with faiss and scored by MRR@10 (main), recall@50,
recall@1000 and nDCG@10 (``ranking.py`` beside this module defines them).

Passages stream from ``collection.tsv`` in batches into a float16 store on disk
(``passage_store.py``) in the feature cache folder, keyed by the model fingerprint
and the collection's identity; an interrupted encoding resumes where it stopped. Without a
cache (``--no-cache``) the store lives in the results folder until the task finishes.

Task options (``--task-option key=value``; the card sets the defaults):

- ``max_passages=N`` (also ``--max-passages N``): a quick run on N passages: every passage
  named in the qrels plus others drawn at random (fixed by ``--seed``); a separate result.
- ``index=flat|ivf``: exact search (``IndexFlatIP``, default) or ``IndexIVFFlat``;
  ``nlist=N`` and ``nprobe=N`` set the IVF cells and the cells searched.
- ``block_rows=N``: passages searched per exact-search block (memory: N x dim x 4 bytes).
- ``query_block=N``: queries searched together (default 4096); under torchrun the ranks
  split these blocks between them.
- ``save_run=1``: write the ranking as ``<variant>.run.tsv`` (``qid<TAB>pid<TAB>rank``, MS
  MARCO's run format) beside the result.

Own files in the same format: a task file with ``task_type: msmarco_passage`` and the keys of
``tasks/msmarco/cards/msmarco-passage-dev.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench import hookimpl
from itra_bench.context import RunContext
from itra_bench.errors import UserError
from itra_bench.metric_names import Metric
from itra_bench.model_api import TEXT
from itra_bench.task import Task, TaskResult, Variant, positive_int_option
from itra_bench.task_fields import file_key, read_keys
from itra_bench.tasks import load_cards
from itra_bench.tasks.msmarco.readers import (
    LAYOUT,
    iter_collection,
    read_qrels,
    read_queries,
    scan_collection,
)

# numpy loads when a task runs: this plugin is loaded by every command, `itra-bench --help`
# and `list` included.
if TYPE_CHECKING:
    import numpy as np

    from itra_bench.model import EncoderModel
    from itra_bench.tasks.msmarco.passage_store import PassageStore

PROTOCOL = "msmarco_passage"
#: This benchmark's YAML cards: its built-in tasks.
CARDS_DIR = Path(__file__).parent / "cards"
INDEXES = ("flat", "ivf")


def _flag(options: Mapping[str, Any], key: str) -> bool:
    raw = options.get(key, False)
    if isinstance(raw, bool):
        return raw
    if str(raw).lower() in ("1", "true", "yes", "on"):
        return True
    if str(raw).lower() in ("0", "false", "no", "off", ""):
        return False
    raise UserError(f"--task-option {key}={raw}: expected 1/0 (or true/false)")


@dataclass
class SearchSettings:
    """The search of one run: index type and its parameters, and the optional subset size."""

    index: str
    nlist: int
    nprobe: int
    max_passages: int | None
    block_rows: int
    query_block: int = 4096

    @property
    def variant(self) -> str:
        """``flat``, ``ivf4096-nprobe32``, with ``-max10000`` for a subset run."""
        name = self.index if self.index == "flat" else f"ivf{self.nlist}-nprobe{self.nprobe}"
        return name + (f"-max{self.max_passages}" if self.max_passages else "")


def _collection_identity(path: Path) -> dict[str, Any]:
    """What identifies a collection file without reading its gigabytes."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def select_rows(all_pids: np.ndarray, judged: np.ndarray, max_passages: int | None,
                seed: int) -> tuple[np.ndarray | None, int]:
    """Collection records to encode, and how many judged pids the collection lacks.

    None means all records. Otherwise every record whose pid is in ``judged`` is kept, and
    others are drawn at random with ``seed`` up to ``max_passages`` in all (sorted records).
    """
    import numpy as np

    is_judged = np.zeros(len(all_pids), dtype=bool)
    step = 1 << 20
    for start in range(0, len(all_pids), step):
        is_judged[start:start + step] = np.isin(all_pids[start:start + step], judged)
    missing = len(judged) - int(is_judged.sum())
    if max_passages is None or max_passages >= len(all_pids):
        return None, missing
    judged_rows = np.flatnonzero(is_judged)
    others = np.flatnonzero(~is_judged)
    extra = max(0, max_passages - len(judged_rows))
    chosen = np.random.default_rng(seed).choice(others, size=extra, replace=False)
    return np.sort(np.concatenate([judged_rows, chosen])), missing


@dataclass(frozen=True)
class EncodingPlan:
    """What is left to encode of a store, as its writer (rank 0) sees it: every rank of a
    distributed job follows the same plan."""

    num_passages: int
    rows_done: int
    source_rows: np.ndarray | None


def encoding_plan(store: PassageStore) -> EncodingPlan:
    """The plan of a started store."""
    import numpy as np

    rows = store.source_rows()
    return EncodingPlan(store.num_passages, store.rows_done,
                        None if rows is None else np.asarray(rows))


def encode_collection(model: EncoderModel, collection: Path, store: PassageStore | None,
                      ctx: RunContext, prefix: str = "",
                      plan: EncodingPlan | None = None) -> None:
    """Embed the store's passages from ``collection`` batch by batch into ``store``,
    continuing after the rows a previous, interrupted run wrote.

    Under a distributed job every rank reads the collection and encodes every K-th batch
    (the batches of one process, so the same vectors); each round of K batches is gathered in
    order and rank 0, the only one holding ``store``, writes it (no shared file system is
    needed between nodes)."""
    import torch
    import torch.nn.functional as F

    from itra_bench.distributed import World, gather_rows

    world = ctx.world or World()
    if plan is None:
        assert store is not None
        plan = encoding_plan(store)
    rows, done, total = plan.source_rows, plan.rows_done, plan.num_passages
    round_: list[list[str]] = []

    def flush() -> None:
        mine = round_[world.rank] if world.rank < len(round_) else []
        vectors = torch.empty(0, 0)
        if mine:
            with torch.inference_mode(), ctx.autocast():
                vectors = F.normalize(model.encode_text(mine).float(), dim=-1).cpu()
        vectors = gather_rows(vectors, world)
        if store is not None:
            store.append(vectors.numpy())
        bar.advance(sum(map(len, round_)))
        round_.clear()

    with ctx.progress.bar("encode passages", total=total, unit="passages") as bar:
        bar.advance(done)
        position = 0  # next store row
        batch: list[str] = []
        try:
            for record, (_, text) in enumerate(iter_collection(collection)):
                if position >= total:
                    break
                if rows is not None and record != rows[position]:
                    continue
                position += 1
                if position <= done:
                    continue
                batch.append(prefix + text)
                if len(batch) == ctx.batch_size:
                    round_.append(batch)
                    batch = []
                    if len(round_) == world.size:
                        flush()
            if batch:
                round_.append(batch)
            if round_:
                flush()
        finally:
            if store is not None:
                store.close()
    if store is not None:
        store.finish()


def open_complete_store(root: str | Path, key: str) -> PassageStore | None:
    """The complete store ``key`` at ``root`` if this process can read it (the same file
    system as its writer), else None; never changes what is there."""
    try:
        meta = json.loads((Path(root) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(meta, dict) and meta.get("key") == key and meta.get("complete")):
        return None
    from itra_bench.tasks.msmarco.passage_store import PassageStore

    return PassageStore(root, key)


@dataclass(kw_only=True)
class MSMarcoPassageTask(Task):
    """Passage ranking on MS MARCO-format files (collection, queries, qrels)."""

    collection: str = file_key(help="the passages: pid<TAB>passage per line (collection.tsv)")
    queries: str = file_key(help="the queries: qid<TAB>query per line")
    qrels: str = file_key(help="the relevance judgements, TREC qrels format")
    depth: int = file_key(1000, help="passages ranked per query (recall@1000 needs 1000)")
    index: str = file_key("flat", help="flat: exact IndexFlatIP | ivf: IndexIVFFlat")
    nlist: int = file_key(4096, help="ivf: the cells")
    nprobe: int = file_key(32, help="ivf: the cells searched per query")
    query_prefix: str = file_key("", help="prepended to each query (e.g. \"query: \" for E5)")
    passage_prefix: str = file_key("", help="prepended to each passage (e.g. \"passage: \")")

    def __post_init__(self) -> None:
        self.protocol = PROTOCOL
        self.main_score = "mrr@10"
        self.modalities = frozenset({TEXT})
        self.layout = (f"{LAYOUT}; this task reads {self.collection}, {self.queries} and "
                       f"{self.qrels} under --data-root")

    def settings(self, options: Mapping[str, Any]) -> SearchSettings:
        """This run's search settings: task options over the card's defaults."""
        index = str(options.get("index", self.index))
        if index not in INDEXES:
            raise UserError(f"--task-option index={index}: expected one of {', '.join(INDEXES)}")
        return SearchSettings(
            index=index, nlist=positive_int_option(options, "nlist", self.nlist) or self.nlist,
            nprobe=positive_int_option(options, "nprobe", self.nprobe) or self.nprobe,
            max_passages=positive_int_option(options, "max_passages", None),
            block_rows=positive_int_option(options, "block_rows", 262_144) or 262_144,
            query_block=positive_int_option(options, "query_block", 4096) or 4096)

    def variants(self, options: Mapping[str, Any]) -> list[Variant]:
        # Exact search over every passage is the task's standard measurement; an approximate
        # index or a passage subset is its own family, never averaged with it in a suite.
        name = self.settings(options).variant
        return [Variant(name, family="" if name == "flat" else name)]

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        return [Path(data_root) / f for f in (self.collection, self.queries, self.qrels)]

    def _store(self, model: EncoderModel, ctx: RunContext, collection: Path,
               settings: SearchSettings, judged: np.ndarray) -> PassageStore:
        from itra_bench.feature_cache import cache_key
        from itra_bench.tasks.msmarco.passage_store import PassageStore

        identity = _collection_identity(collection)
        subset = None
        if settings.max_passages:
            subset = {"max_passages": settings.max_passages, "seed": ctx.seed,
                      "judged": cache_key(pids=judged.tolist())}
        key = cache_key(kind="msmarco-passages", model=model.fingerprint, collection=identity,
                        subset=subset, prefix=self.passage_prefix, precision=ctx.precision)
        root = (ctx.cache.root / "passages" / key if ctx.cache is not None
                else ctx.output_dir / f".passage-store-{key[:16]}")
        return PassageStore(root, key, info={"model": model.name, "collection": identity,
                                             "subset": subset})

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        import numpy as np

        from itra_bench.distributed import World, broadcast_from_main
        from itra_bench.encoding import encode_texts

        settings = self.settings(ctx.options)
        collection = Path(ctx.data_root) / self.collection
        qrels = read_qrels(Path(ctx.data_root) / self.qrels)
        queries = read_queries(Path(ctx.data_root) / self.queries)
        qids = sorted(q for q, judged in qrels.items() if any(r > 0 for r in judged.values()))
        lacking = [q for q in qids if q not in queries]
        if lacking:
            raise UserError(f"{ctx.data_root / self.queries}: {len(lacking)} queries of the "
                            f"qrels have no text (qids {lacking[:5]}); use the queries file "
                            f"that goes with {self.qrels}")
        judged = np.array(sorted({p for judged in qrels.values() for p in judged}), np.int64)

        world = ctx.world or World()
        store = self._store(model, ctx, collection, settings, judged)
        plan = None
        if world.is_main and not store.complete:
            if not store.started:
                store.root.mkdir(parents=True, exist_ok=True)
                scan = store.root / "scan-pids.i64"
                count = scan_collection(collection, scan)
                if count == 0:
                    raise UserError(f"{collection}: no passages (expected {LAYOUT})")
                all_pids = np.memmap(scan, dtype=np.int64, mode="r", shape=(count,))
                rows, missing = select_rows(all_pids, judged, settings.max_passages, ctx.seed)
                store.start(all_pids if rows is None else all_pids[rows], rows,
                            judged_missing=missing)
                del all_pids
                scan.unlink()
            plan = encoding_plan(store)
        # Only rank 0 holds the store (in its cache); the others follow its plan.
        plan = broadcast_from_main(plan, world)
        if plan is not None:
            encode_collection(model, collection, store if world.is_main else None, ctx,
                              self.passage_prefix, plan)
        missing = int(store.meta["judged_missing"]) if world.is_main and store.meta else 0
        missing = broadcast_from_main(missing, world)
        if missing:
            ctx.console.print(f"[yellow]{self.name}: {missing} passages named in the qrels are "
                              f"not in {collection}[/]")

        texts = [self.query_prefix + queries[q] for q in qids]
        query_vectors = encode_texts(model, texts, ctx, "encode queries").numpy()
        from itra_bench.tasks.msmarco.ranking import faiss_gpu_available

        use_gpu = ctx.device.type == "cuda" and faiss_gpu_available()
        scores, rows, searchers = self._search(store, query_vectors, settings, ctx, use_gpu)
        result = None
        if world.is_main:
            result = self._score(store, scores, rows, qids, qrels, ctx, settings,
                                 {"faiss_gpu": use_gpu, "search_processes": searchers,
                                  "judged_passages_missing": missing})
        # Rank 0 alone scores and writes the run file; every rank returns its result.
        return broadcast_from_main(result, world)

    def _score(self, store: PassageStore, scores: np.ndarray, rows: np.ndarray,
               qids: list[int], qrels: Mapping[int, Mapping[int, int]], ctx: RunContext,
               settings: SearchSettings, extra: dict[str, Any]) -> TaskResult:
        """Metrics of the ranking, its details, and the run file when asked for."""
        from itra_bench.tasks.msmarco.ranking import ranked_lists, ranking_metrics

        ranked = ranked_lists(scores, rows, store.pids, qids)
        metrics = ranking_metrics(ranked, qrels)
        details: dict[str, Any] = {
            "num_queries": len(qids), "num_passages": store.num_passages,
            "index": settings.index, "faiss_gpu": extra["faiss_gpu"], "depth": self.depth,
            "search_processes": extra["search_processes"],
        }
        if settings.index == "ivf":
            details.update(nlist=settings.nlist, nprobe=settings.nprobe)
        if settings.max_passages:
            details.update(max_passages=settings.max_passages, subset_seed=ctx.seed)
        if extra["judged_passages_missing"]:
            details["judged_passages_missing"] = extra["judged_passages_missing"]
        if _flag(ctx.options, "save_run"):
            details["run_file"] = str(self._save_run(ranked, ctx, settings.variant))
        if ctx.cache is None:
            store.remove()
        else:
            details["passage_store"] = str(store.root)
        return TaskResult(metrics, self.main_score, len(qids), details)

    def _search(self, store: PassageStore, queries: np.ndarray, settings: SearchSettings,
                ctx: RunContext, use_gpu: bool) -> tuple[np.ndarray, np.ndarray, int]:
        """``(scores, rows)`` of every query on rank 0, and how many processes searched.

        Exact search under a distributed job splits the query blocks across the ranks that
        can read rank 0's store (all of them on one node or a shared file system); each
        searches the passages block by block, and rank 0 gathers the rows in order. The
        query blocks are those of one process, so the ranking is the same. An IVF index
        holds every passage in memory, so rank 0 alone builds and searches it."""
        import numpy as np
        import torch

        from itra_bench.distributed import (
            World,
            broadcast_from_main,
            gather_objects,
            gather_rows,
            shard,
        )
        from itra_bench.tasks.msmarco.ranking import search_inner_product

        world = ctx.world or World()
        where = broadcast_from_main((str(store.root), store.key), world)
        readable = store if world.is_main else open_complete_store(*where)
        can_read = gather_objects(readable is not None, world)
        split = settings.index == "flat" and world.size > 1 and all(can_read)
        searchers = world.size if split else 1
        block = settings.query_block
        if split:
            mine = shard(-(-len(queries) // block), world)
            lo, hi = min(mine.start * block, len(queries)), min(mine.stop * block, len(queries))
        elif world.is_main:
            lo, hi = 0, len(queries)
        else:
            return np.empty((0, 0), np.float32), np.empty((0, 0), np.int64), searchers
        assert readable is not None
        k = min(self.depth, readable.num_passages)
        scores, rows = np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        if hi > lo:
            with ctx.progress.bar(f"search ({settings.index})", total=readable.num_passages,
                                  unit="passages") as bar:
                scores, rows = search_inner_product(
                    readable, queries[lo:hi], self.depth, index=settings.index,
                    nlist=settings.nlist, nprobe=settings.nprobe,
                    block_rows=settings.block_rows, query_chunk=block, use_gpu=use_gpu,
                    gpu=world.local_rank if use_gpu and world.size > 1 else None,
                    seed=ctx.seed, advance=bar.advance)
        if split:
            scores = gather_rows(torch.from_numpy(scores), world, "gather the search").numpy()
            rows = gather_rows(torch.from_numpy(rows), world, "gather the search").numpy()
        return scores, rows, searchers

    @staticmethod
    def _save_run(ranked: Mapping[int, list[int]], ctx: RunContext, variant: str) -> Path:
        from itra_bench.atomic_io import atomic_write

        path = ctx.output_dir / f"{variant}.run.tsv"

        def write(f: Any) -> None:
            for qid, pids in ranked.items():
                f.write("".join(f"{qid}\t{pid}\t{rank}\n"
                                for rank, pid in enumerate(pids, start=1)).encode())

        return atomic_write(path, write)


def task_from_file(doc: dict[str, Any], path: Path) -> MSMarcoPassageTask:
    """A passage-ranking task from a task file or card (``task_type: msmarco_passage``)."""
    values = read_keys(MSMarcoPassageTask, doc, path, f"task type {PROTOCOL}")
    if values["index"] not in INDEXES:
        raise UserError(f"{path}: key 'index' must be one of {', '.join(INDEXES)}")
    for key in ("depth", "nlist", "nprobe"):
        if values[key] < 1:
            raise UserError(f"{path}: key {key!r} must be a positive integer")
    if values["depth"] < 1000:
        # recall@1000 needs 1000 ranked passages per query
        raise UserError(f"{path}: key 'depth' must be at least 1000 (recall@1000)")
    return MSMarcoPassageTask(**values)


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return load_cards(CARDS_DIR, {PROTOCOL: task_from_file})


@hookimpl
def itra_bench_task_file_protocols() -> dict[str, Any]:
    return {PROTOCOL: task_from_file}


@hookimpl
def itra_bench_metrics() -> list[Metric]:
    # Definitions: tasks/msmarco/ranking.py; each a mean over queries of per-query values.
    return [
        Metric("mrr@{k}", "mean reciprocal rank of the first relevant passage among the "
               "first k (MS MARCO's MRR@10)", outcome_kinds=("means",)),
        Metric("recall@{k}", "the share of a query's relevant passages among its first k, "
               "averaged over queries (trec_eval recall_k)", outcome_kinds=("means",)),
        Metric("ndcg@{k}", "normalized discounted cumulative gain of the first k, binary "
               "gains (trec_eval ndcg_cut_k)", outcome_kinds=("means",)),
    ]
