"""Property-based tests of the parsers a user feeds files to: caption CSVs (evaluation and
training), task YAML and the shipped cards, COCO / Karpathy captions JSON, STS / SICK /
word-similarity files, MS MARCO TSVs, VQA v2 JSON, SNLI-VE JSONL, the result JSON that
`results`, `report` and `compare` read, the per-sample outcomes (``.samples.npz``) beside it,
and CIFAR's batch pickles.

Each parser gets raw random bytes and mutations of a valid file (truncation, byte flips,
inserted and deleted bytes, other encodings, byte-order marks, deleted columns, deleted keys
and values of the wrong type in JSON/YAML). The property: parsing either succeeds or raises
:class:`~itra_bench.errors.UserError` whose message names the file; any other exception is a
bug. The default run takes a few seconds per parser; ``-m slow`` runs many more cases.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzzing import BOMS, ENCODINGS, QUICK, THOROUGH
from hypothesis import given, settings
from hypothesis import strategies as st
from result_files import write_result, write_two_models

from itra_bench.errors import UserError
from itra_bench.results import ResultStore
from itra_bench.sample_outcomes import samples_path

# Bytes that parsers treat specially somewhere: quotes, separators, line ends, NUL, invalid
# UTF-8, a BOM, numbers that float() accepts but are not finite, YAML/JSON syntax.
INTERESTING = [b'"', b"'", b"\t", b",", b";", b" ", b"\n", b"\r", b"\r\n", b"\x00", b"\xff",
               b"\xc3", b"\xe9", b"\xef\xbb\xbf", b"nan", b"inf", b"-inf", b"1e999", b"-1",
               b"99999999999999999999999", b"{", b"}", b"[", b"]", b":", b"- ", b"#", b"&a",
               b"*a", b"!!python/object:os.system", b"~", b"null", b"\\", b"{}",
               b"1" * 5000, b"2001-02-30", b"!!int x", b"!!timestamp x", b"[" * 2000]

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6)


@dataclass
class Target:
    """One parser: ``setup(folder)`` writes the valid companion files and returns the parse
    calls (one per reader setting); ``fuzzed`` is the file that gets random content;
    ``files`` the names a message may name."""

    name: str
    fuzzed: str
    valid: list[bytes]
    setup: Callable[[Path], list[Callable[[], Any]]]
    separator: bytes | None = None
    tree: str | None = None  # "json", "jsonl" or "yaml": structure-aware mutations too
    files: tuple[str, ...] = ()


# -- mutations -----------------------------------------------------------------------------

@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes, separator: bytes | None) -> bytes:
    """``data`` after one to three byte-level edits."""
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "reencode", "bom",
                                   "drop_field", "dup_line", "crlf"]))
        n = len(data)
        if op == "truncate":
            data = data[:draw(st.integers(0, n))]
        elif op == "flip" and n:
            i = draw(st.integers(0, n - 1))
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
        elif op == "insert":
            i = draw(st.integers(0, n))
            chunk = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=8))
            data = data[:i] + chunk + data[i:]
        elif op == "delete" and n:
            i = draw(st.integers(0, n - 1))
            j = draw(st.integers(i, min(n, i + 40)))
            data = data[:i] + data[j:]
        elif op == "reencode":
            encoding = draw(st.sampled_from(ENCODINGS))
            data = data.decode("utf-8", "replace").encode(encoding, "replace")
        elif op == "bom":
            data = draw(st.sampled_from(BOMS)) + data
        elif op == "drop_field" and separator is not None:
            lines = data.split(b"\n")
            k = draw(st.integers(0, len(lines) - 1))
            fields = lines[k].split(separator)
            del fields[draw(st.integers(0, len(fields) - 1))]
            lines[k] = separator.join(fields)
            data = b"\n".join(lines)
        elif op == "dup_line":
            lines = data.split(b"\n")
            k = draw(st.integers(0, len(lines) - 1))
            lines.insert(k, lines[k])
            data = b"\n".join(lines)
        elif op == "crlf":
            data = data.replace(b"\n", b"\r\n")
    return data


def _places(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _places(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _places(value, (*prefix, i))
    return out


@st.composite
def tree_mutations(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` (parsed JSON/YAML) with keys deleted or renamed and values of other types."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        place = draw(st.sampled_from(_places(doc)))
        op = draw(st.sampled_from(["delete", "replace", "rename", "empty"]))
        if not place:
            doc = draw(JSON_VALUES) if op == "replace" else type(doc)()
            continue
        parent = doc
        for key in place[:-1]:
            parent = parent[key]
        key = place[-1]
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(JSON_VALUES)
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = parent.pop(key)
        elif op == "empty":
            parent[key] = type(parent[key])() if isinstance(parent[key], (list, dict, str)) \
                else None
    return doc


def _dump(doc: Any, kind: str) -> bytes:
    if kind == "yaml":
        return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8")
    if kind == "jsonl":
        records = doc if isinstance(doc, list) else [doc]
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def _load(data: bytes, kind: str) -> Any:
    text = data.decode("utf-8")
    if kind == "yaml":
        return yaml.safe_load(text)
    if kind == "jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def contents(target: Target) -> st.SearchStrategy[bytes]:
    """Random bytes, or a valid file of ``target`` mutated."""
    valid = st.sampled_from(target.valid)
    options = [
        st.binary(max_size=400),
        valid.flatmap(lambda v: byte_mutations(v, target.separator)),
    ]
    if target.tree:
        kind = target.tree
        options.append(valid.flatmap(lambda v: tree_mutations(_load(v, kind))).map(
            lambda d: _dump(d, kind)))
        options.append(valid.flatmap(lambda v: tree_mutations(_load(v, kind))).map(
            lambda d: _dump(d, kind)).flatmap(lambda b: byte_mutations(b, None)))
    return st.one_of(options)


# -- the parsers ---------------------------------------------------------------------------

CAPTIONS = ("filepath\ttitle\n"
            "img/a.jpg\tUn café près du pont\n"
            'img/b.jpg\t"A dog, running ""fast"""\n'
            "img/a.jpg\t日本の猫が座っている\n").encode()
CAPTIONS_COMMA = ('filepath,title,extra\nimg/a.jpg,"Un café, au lait",x\n'
                  "img/b.jpg,Ein Hund läuft,y\n").encode()


def _images(folder: Path) -> None:
    (folder / "img").mkdir(exist_ok=True)
    for name in ("a.jpg", "b.jpg"):
        (folder / "img" / name).write_bytes(b"")


def _captions_eval(folder: Path) -> Callable[[], Any]:
    from itra_bench.datasets.captions_csv import CaptionsCSV

    _images(folder)
    return [lambda: CaptionsCSV(folder / "captions.tsv"),
            lambda: CaptionsCSV(folder / "captions.tsv", separator=",")]


def _captions_train(folder: Path) -> Callable[[], Any]:
    from itra_train.data import CsvImageText

    _images(folder)
    return [lambda: CsvImageText(folder / "captions.tsv"),
            lambda: CsvImageText(folder / "captions.tsv", separator=",")]


def _task_protocols() -> dict[str, Any]:
    import importlib

    out: dict[str, Any] = {}
    for benchmark in ("coco", "msmarco", "snli_ve", "sts", "tapc", "wikisections", "wordsim"):
        plugin = importlib.import_module(f"itra_bench.tasks.{benchmark}.plugin")
        out.update(plugin.itra_bench_task_file_protocols())
    return out


def _task_yaml(folder: Path) -> Callable[[], Any]:
    from itra_bench.yaml_tasks import load_task_file

    protocols = _task_protocols()
    return [lambda: load_task_file(folder / "task.yaml", protocols)]


def _cards() -> list[bytes]:
    import itra_bench.tasks

    builtin = [
        "name: pets\nprotocol: zeroshot\nroot: pets\nsplit: test\nclassnames: [cat, dog]\n"
        "templates: ['a photo of a {}, a pet.']\nsuites: [mine]\ndescription: Chats é\n",
        "name: pets-knn\nprotocol: knn\nroot: pets\nk: 5\nweighting: softmax\n"
        "temperature: 0.1\n",
        "name: pets-lp\nprotocol: linear_probe\nroot: pets\nval_split: val\n",
        "name: caps\nprotocol: retrieval\nfile: captions/val.tsv\nseparator: ','\n"
        "img_key: path\ncaption_key: text\n",
    ]
    return [c.encode() for c in builtin] + sorted(p.read_bytes()
                                                  for p in Path(itra_bench.tasks.__file__)
                                                  .parent.glob("*/cards/*.yaml"))


COCO = json.dumps({
    "info": {"description": "tiny"},
    "images": [{"id": 2, "file_name": "b.jpg"}, {"id": 1, "file_name": "a.jpg"},
               {"id": 3, "file_name": "c.jpg"}],
    "annotations": [{"id": 10, "image_id": 1, "caption": "Un café"},
                    {"id": 11, "image_id": 2, "caption": "A dog"},
                    {"id": 12, "image_id": 1, "caption": "猫"}],
}, ensure_ascii=False).encode()
KARPATHY = json.dumps({"dataset": "coco", "images": [
    {"filepath": "val2014", "filename": "a.jpg", "split": "test",
     "sentences": [{"raw": "Un café", "tokens": ["un", "café"]}, {"raw": "A cup"}]},
    {"filepath": "val2014", "filename": "b.jpg", "split": "val", "sentences": [{"raw": "x"}]},
    {"filename": "c.jpg", "split": "test", "sentences": []},
]}, ensure_ascii=False).encode()


def _coco(folder: Path) -> Callable[[], Any]:
    from itra_bench.tasks.coco.captions import CocoCaptions

    return [lambda: CocoCaptions(folder / "captions.json", folder / "images")]


def _karpathy(folder: Path) -> Callable[[], Any]:
    from itra_bench.tasks.coco.captions import KarpathyCaptions

    return [lambda: KarpathyCaptions(folder / "dataset.json", folder / "images", "test")]


STS_INPUT = "Un homme joue.\tA man plays.\nA cat é.\tA dog.\nOne.\tTwo.\n".encode()
STS_GOLD = b"4.2\n\n3.5\n"
STSB = ("main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane "
        "is taking off.\nmain-news\theadlines\t2013\t0002\t0.6\tCafé é.\tTea.\tsrc-a\tsrc-b\n"
        ).encode()
SICK = ("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        "1\tA café is open\tA shop is open\t4.5\tNEUTRAL\n"
        "2\tA dog runs\tA cat sleeps\t1.2\tCONTRADICTION\n").encode()
SICK_FULL = ("pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\t"
             "entailment_AB\tentailment_BA\tsentence_A_original\tsentence_B_original\t"
             "sentence_A_dataset\tsentence_B_dataset\tSemEval_set\n"
             "1\tA café is open\tA shop is open\tNEUTRAL\t4.5\tA_neutral_B\tB_neutral_A\to\to\t"
             "FLICKR\tFLICKR\tTRAIN\n"
             "2\tA dog runs\tA cat sleeps\tCONTRADICTION\t1.2\tA_contradicts_B\t"
             "B_contradicts_A\to\to\tSEMEVAL\tSEMEVAL\tTEST\n"
             "3\tA boy sings\tA kid sings\tENTAILMENT\t4.9\tA_entails_B\tB_entails_A\to\to\t"
             "FLICKR\tFLICKR\tTEST\n").encode()


def _sts_folder(folder: Path) -> None:
    (folder / "STS.input.x.txt").write_bytes(STS_INPUT)
    (folder / "STS.gs.x.txt").write_bytes(STS_GOLD)


def _sts_input(folder: Path) -> Callable[[], Any]:
    from itra_bench.tasks.sts.plugin import read_senteval_sts

    _sts_folder(folder)
    return [lambda: read_senteval_sts(folder, "x")]


def _sts_gold(folder: Path) -> Callable[[], Any]:
    return _sts_input(folder)


def _stsb(folder: Path) -> Callable[[], Any]:
    from itra_bench.tasks.sts.plugin import read_stsbenchmark

    return [lambda: read_stsbenchmark(folder / "sts-test.csv")]


def _sick(folder: Path) -> Callable[[], Any]:
    from itra_bench.tasks.sts import plugin as sts

    return [lambda: sts.read_sick(folder / "SICK.txt"),
            lambda: sts.read_sick(folder / "SICK.txt", semeval_set=("TEST",))]


WORDSIM = [
    "word1\tword2\tPOS\tSimLex999\tconc(w1)\nold\tnew\tA\t1.58\t2.72\ncafé\ttea\tN\t7.2\t3\n",
    "Word 1,Word 2,Human (mean)\nlove,sex,6.77\ntiger,cat,7.35\n",
    "# gensim\n# comment\nlove\tsex\t6.77\ntiger\tcat\t7.35\n\n",
    "gem;jewel;3.94\ncar;auto;3.92\n",
    "tiger cat 7.35\nbook paper 7.46\n",
]


def _wordsim(folder: Path) -> Callable[[], Any]:
    from itra_bench.tasks.wordsim.plugin import read_word_pairs

    path = folder / "words.txt"
    return [*(lambda c=column: read_word_pairs(path, "auto", c)
              for column in (2, 3, "SimLex999", "Human (mean)")),
            lambda: read_word_pairs(path, "\t", 2, encoding="latin-1")]


COLLECTION = "0\tThe presence of communication é.\n1\tManhattan\tproject\n\n7\t\n".encode()
QUERIES = "1048585\twhat is paula deen's brother\n2\tcafé\n".encode()
QRELS = b"1048585\t0\t7\t1\n2 0 0 1\n2 0 1 0\n"


def _msmarco_files(folder: Path) -> None:
    (folder / "collection.tsv").write_bytes(COLLECTION)
    (folder / "queries.tsv").write_bytes(QUERIES)
    (folder / "qrels.tsv").write_bytes(QRELS)


def _msmarco(folder: Path) -> Callable[[], Any]:
    from itra_bench.tasks.msmarco import readers as msmarco

    _msmarco_files(folder)

    return [lambda: msmarco.scan_collection(folder / "collection.tsv", folder / "pids.i64"),
            lambda: list(msmarco.iter_collection(folder / "collection.tsv")),
            lambda: msmarco.read_queries(folder / "queries.tsv"),
            lambda: msmarco.read_qrels(folder / "qrels.tsv")]


VQA_QUESTIONS = json.dumps({"info": {}, "questions": [
    {"image_id": 42, "question": "What color is the café?", "question_id": 420},
    {"image_id": 42, "question": "How many?", "question_id": 421},
]}, ensure_ascii=False).encode()
VQA_ANNOTATIONS = json.dumps({"annotations": [
    {"question_id": 420, "image_id": 42, "question_type": "what color is the",
     "answer_type": "other", "multiple_choice_answer": "red",
     "answers": [{"answer": "red", "answer_confidence": "yes", "answer_id": i}
                 for i in range(1, 4)]},
    {"question_id": 421, "image_id": 42, "question_type": "how many", "answer_type": "number",
     "multiple_choice_answer": "2", "answers": [{"answer": "2", "answer_id": 1}]},
]}).encode()


def _vqa(folder: Path) -> Callable[[], Any]:
    from itra_bench.tasks.tapc.vqav2 import answer_counts, answers_by_question_type, read_split
    from itra_bench.tasks.tapc.vqav2 import read_annotations as read

    (folder / "questions.json").write_bytes(VQA_QUESTIONS)
    (folder / "annotations.json").write_bytes(VQA_ANNOTATIONS)

    def statistics() -> None:
        annotations = read(folder / "annotations.json")
        answer_counts(annotations)
        answers_by_question_type(annotations)

    return [statistics,
            lambda: read_split(folder / "questions.json", folder / "annotations.json")]


SNLI_VE = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
    {"Flickr30K_ID": "3416050480", "sentence1": "Un café.", "sentence2": "A shop.",
     "gold_label": "entailment", "annotator_labels": ["entailment"]},
    {"Flickr30K_ID": 3416050481, "sentence1": "Dogs.", "sentence2": "Cats.",
     "gold_label": "contradiction"},
    {"Flickr30K_ID": "1", "sentence1": "x", "sentence2": "y", "gold_label": "-"},
]).encode()


def _snli_ve(folder: Path) -> Callable[[], Any]:
    from itra_bench.tasks.snli_ve.plugin import read_snli_ve

    return [lambda: read_snli_ve(folder / "snli_ve_test.jsonl")]


# Results: a result JSON as `results`, `report` and `compare` read it, the per-sample outcomes
# beside it (hash-consistent: the JSON records the mutated file's SHA-256, as if the file had
# been written so), and CIFAR's batch pickles.

RESULTS = "results"
B_T2 = ResultStore(RESULTS).path("b", "b" * 16, "t2", "default")


def _result_samples() -> list[bytes]:
    """Valid result documents: a zero-shot result, an ELEVATER one, one without outcomes."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(tmp)
        plain = write_result(store, "b", "t2", 0.75, fingerprint="b" * 16)
        elevater = write_result(store, "b", "t3", 0.6, fingerprint="b" * 16,
                                protocol="elevater", variant="zeroshot", suites=["elevater"],
                                main_score_interval=None,
                                details={"mode": "zeroshot", "n_shot": 5, "seed": 1,
                                         "knowledge": "none"})
        bare = write_result(store, "b", "t4", 0.7, fingerprint="b" * 16, samples=None,
                            suite_members=None, variant_family="")
        return [p.read_bytes() for p in (plain, elevater, bare)]


def _readers_of_results(folder: Path) -> list[Callable[[], Any]]:
    from itra_bench.compare import compare_results
    from itra_bench.leaderboard import collate, write_leaderboard
    from itra_bench.report_data import chart_columns
    from itra_bench.vision_benchmark.summary import summarize

    root = folder / RESULTS
    write_two_models(root)
    # What `report` reads beyond `results` (its charts take a tenth of a second to draw).
    return [lambda: ResultStore(root).read(root / B_T2.relative_to(RESULTS)),
            lambda: write_leaderboard(root, folder / "board", []),
            lambda: summarize(root),
            lambda: chart_columns(root, collate(root)),
            lambda: compare_results(root, "a", "b", resamples=5, problems=[])]


def _samples(folder: Path) -> list[Callable[[], Any]]:
    from itra_bench.compare import compare_results
    from itra_bench.sample_outcomes import read_outcomes

    root = folder / RESULTS
    write_two_models(root)
    result = folder / B_T2

    def rehash() -> dict[str, Any]:
        record = json.loads(result.read_text())
        record["samples"]["sha256"] = hashlib.sha256(
            samples_path(result).read_bytes()).hexdigest()
        result.write_text(json.dumps(record))
        return record

    return [lambda: read_outcomes(result, rehash()),
            lambda: rehash() and compare_results(root, "a", "b", resamples=5)]


def _samples_files() -> list[bytes]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write_result(ResultStore(tmp), "b", "t2", 0.75, fingerprint="b" * 16)
        return [samples_path(path).read_bytes()]


CIFAR = "cifar-10-batches-py"


def _cifar_pickles(meta: bool) -> list[bytes]:
    """Valid CIFAR-10 test batches (or meta files): str and bytes keys, protocols 2 and 4."""
    import pickle

    import numpy as np

    rows = np.arange(4 * 3072, dtype=np.int64).astype(np.uint8).reshape(4, 3072)
    docs = [{"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 4}] \
        if meta else [{"batch_label": "test", "labels": [0, 3, 9, 1], "data": rows,
                       "filenames": [f"img_{i}.png" for i in range(4)]}]
    out = []
    for doc in docs:
        for keys in (str, str.encode):
            for protocol in (2, 4):
                out.append(pickle.dumps({keys(k): v for k, v in doc.items()},
                                        protocol=protocol))
    return out


def _cifar(folder: Path) -> list[Callable[[], Any]]:
    from itra_bench.tasks.classic.torchvision_formats import CifarSplit

    (folder / CIFAR).mkdir(exist_ok=True)
    for name, valid in (("batches.meta", _cifar_pickles(True)[0]),
                        ("test_batch", _cifar_pickles(False)[0])):
        if not (folder / CIFAR / name).exists():
            (folder / CIFAR / name).write_bytes(valid)
    return [lambda: CifarSplit(folder, "cifar10", "test")]


TARGETS = [
    Target("captions-eval", "captions.tsv", [CAPTIONS, CAPTIONS_COMMA], _captions_eval, b"\t"),
    Target("captions-train", "captions.tsv", [CAPTIONS, CAPTIONS_COMMA], _captions_train,
           b"\t"),
    Target("task-yaml", "task.yaml", _cards(), _task_yaml, None, "yaml"),
    Target("coco-captions", "captions.json", [COCO], _coco, None, "json"),
    Target("karpathy-captions", "dataset.json", [KARPATHY], _karpathy, None, "json"),
    Target("sts-input", "STS.input.x.txt", [STS_INPUT], _sts_input, b"\t",
           files=("STS.input.x.txt", "STS.gs.x.txt")),
    Target("sts-gold", "STS.gs.x.txt", [STS_GOLD], _sts_gold, None,
           files=("STS.input.x.txt", "STS.gs.x.txt")),
    Target("stsbenchmark", "sts-test.csv", [STSB], _stsb, b"\t"),
    Target("sick", "SICK.txt", [SICK, SICK_FULL], _sick, b"\t"),
    Target("wordsim", "words.txt", [w.encode() for w in WORDSIM], _wordsim, b"\t"),
    Target("msmarco-collection", "collection.tsv", [COLLECTION], _msmarco, b"\t"),
    Target("msmarco-queries", "queries.tsv", [QUERIES], _msmarco, b"\t"),
    Target("msmarco-qrels", "qrels.tsv", [QRELS], _msmarco, b"\t"),
    Target("vqa-questions", "questions.json", [VQA_QUESTIONS], _vqa, None, "json",
           files=("questions.json", "annotations.json")),
    Target("vqa-annotations", "annotations.json", [VQA_ANNOTATIONS], _vqa, None, "json"),
    Target("snli-ve", "snli_ve_test.jsonl", [SNLI_VE], _snli_ve, None, "jsonl"),
    Target("result-json", str(B_T2), _result_samples(), _readers_of_results, None, "json",
           files=(B_T2.name, RESULTS)),
    Target("samples-npz", str(samples_path(B_T2)), _samples_files(), _samples),
    Target("cifar-batch", f"{CIFAR}/test_batch", _cifar_pickles(False), _cifar),
    Target("cifar-meta", f"{CIFAR}/batches.meta", _cifar_pickles(True), _cifar,
           files=("batches.meta", "test_batch")),
]
BY_NAME = {t.name: t for t in TARGETS}


def _check(target: Target, folder: Path, calls: list[Callable[[], Any]], data: bytes
           ) -> None:
    (folder / target.fuzzed).write_bytes(data)
    for parse in calls:
        try:
            parse()
        except UserError as exc:
            names = target.files or (target.fuzzed,)
            assert any(name in str(exc) for name in names), f"message names no file: {exc}"


def _fuzz(target: Target, folder: Path, cases: settings) -> None:
    calls = target.setup(folder)

    @cases
    @given(contents(target))
    def run(data: bytes) -> None:
        _check(target, folder, calls, data)

    run()


@pytest.mark.parametrize("name", list(BY_NAME))
def test_valid_samples_parse(name: str, tmp_path: Path) -> None:
    """The fuzzers start from files the parsers accept (else mutations prove little): each
    valid sample parses under at least one of the reader settings."""
    target = BY_NAME[name]
    calls = target.setup(tmp_path)
    for valid in target.valid:
        (tmp_path / target.fuzzed).write_bytes(valid)
        errors = []
        for parse in calls:
            try:
                parse()
            except UserError as exc:
                errors.append(str(exc))
        assert len(errors) < len(calls), errors


@pytest.mark.parametrize("name", list(BY_NAME))
def test_parser_raises_only_user_errors(name: str, tmp_path: Path) -> None:
    """Random and mutated files: the parser succeeds or raises a UserError naming the file."""
    _fuzz(BY_NAME[name], tmp_path, QUICK)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BY_NAME))
def test_parser_raises_only_user_errors_thorough(name: str, tmp_path: Path) -> None:
    """The same property over many more cases (CI runs it; ``-m "not slow"`` skips it)."""
    _fuzz(BY_NAME[name], tmp_path, THOROUGH)
