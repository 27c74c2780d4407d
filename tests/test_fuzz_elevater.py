"""Property-based tests of ELEVATER's parsers: index files (``zip@path label`` lines), label
maps, COCO JSON indexes and dataset cards (vision_benchmark/readers.py, cards.py).

Each parser gets raw random bytes and mutations of a valid file (truncation, byte flips,
inserted and deleted bytes, repeated lines, other encodings, byte-order marks; for the JSON
and YAML files, keys deleted and values replaced by values of any type). The property: reading
either succeeds or raises :class:`~itra_bench.errors.UserError` whose message names the file;
any other exception is a bug. The default run takes a few seconds; the ``slow`` variants run
many more cases.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from elevater_data import tiny_card, write_dataset
from fuzzing import BOMS, ENCODINGS, QUICK, THOROUGH
from hypothesis import given
from hypothesis import strategies as st

from itra_bench.errors import UserError
from itra_bench.vision_benchmark.cards import CARDS_DIR, find_card, load_card
from itra_bench.vision_benchmark.readers import open_split
from itra_bench.vision_benchmark.task import ElevaterTask, elevater_card_task

# Bytes the parsers treat specially somewhere: separators, line ends, '@', digits and signs,
# commas, NUL, invalid UTF-8, a BOM, YAML and JSON syntax.
INTERESTING = [b" ", b"\t", b"\n", b"\r", b"\r\n", b"\x0b", b"\x0c", b"\x85", b"\xe2\x80\xa8",
               b"@", b",", b"0", b"9", b"-1", b"+3", b"1_0", b"\xd9\xa3", b"99999999999",
               b"9" * 5000, b"\x00", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\\", b"/", b"..",
               b"{", b"}", b"[", b"]", b":", b"- ", b"#", b"&a", b"*a", b"~", b"null",
               b"!!python/object:os.system", b'"', b"'", b"{}", b"1e999", b"NaN"]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
    | st.text(max_size=8) | st.sampled_from(["{}", "a {} b", "{0}", "{c}", "test", "x.zip"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=6) | st.sampled_from(["index", "files", "num_images", "test", "id",
                                               "name", "file_name", "image_id"]),
        inner, max_size=3),
    max_leaves=6)


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` after one to three random edits."""
    data = valid
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "repeat_line",
                                     "swap_lines", "encode", "bom"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "truncate":
            data = data[:pos]
        elif kind == "flip" and data:
            i = min(pos, len(data) - 1)
            data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
        elif kind == "insert":
            piece = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=8))
            data = data[:pos] + piece + data[pos:]
        elif kind == "delete":
            data = data[:pos] + data[pos + draw(st.integers(1, 40)):]
        elif kind in ("repeat_line", "swap_lines"):
            lines = data.split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if kind == "repeat_line":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = b"\n".join(lines)
        elif kind == "encode":
            text = data.decode("utf-8", errors="replace")
            data = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
        elif kind == "bom":
            data = draw(st.sampled_from(BOMS)) + data
    return data


def contents(valid: bytes) -> st.SearchStrategy[bytes]:
    """Raw bytes, or a mutation of ``valid``."""
    return st.binary(max_size=600) | mutated(valid)


def _check_error(exc: UserError, *files: Path) -> None:
    msg = str(exc)
    assert any(str(f) in msg for f in files), f"message names none of {files}: {msg}"


# --- index files and label maps --------------------------------------------------------------


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A tiny multilabel index-format dataset with a label map (labels up to 19)."""
    card = tiny_card(find_card("voc-2007-classification"), per_class=1)
    root = tmp_path_factory.mktemp("voc")
    write_dataset(card, root, per_class=1)
    return card, root


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A tiny multiclass index-format dataset (no label map)."""
    card = tiny_card(find_card("cifar-100"), per_class=1)
    root = tmp_path_factory.mktemp("cifar")
    write_dataset(card, root, per_class=1)
    return card, root


def _read_split(card: Any, data_root: Path, fuzzed: Path, data: bytes) -> None:
    """Write ``data`` to ``fuzzed``, read the test split, restore the file."""
    valid = fuzzed.read_bytes()
    fuzzed.write_bytes(data)
    try:
        ds = open_split(card, data_root, "test")
        # A split that parses must also answer the pre-flight check and list its images.
        assert isinstance(ds.missing_images(), list)
        assert len(ds) == card.splits["test"].num_images == len(ds.targets)
        ds.label_matrix()
    except UserError as exc:
        _check_error(exc, fuzzed)
    finally:
        fuzzed.write_bytes(valid)


def _index(dataset: tuple[Any, Path]) -> Path:
    card, root = dataset
    return root / card.root / card.splits["test"].index


def _labelmap(dataset: tuple[Any, Path]) -> Path:
    card, root = dataset
    return root / card.root / card.labelmap


@pytest.mark.parametrize("which", ["cifar", "voc"])
def test_index_file_fuzz(request: pytest.FixtureRequest, which: str) -> None:
    dataset = request.getfixturevalue(which)
    index = _index(dataset)

    @QUICK
    @given(contents(index.read_bytes()))
    def check(data: bytes) -> None:
        _read_split(*dataset, index, data)

    check()


@st.composite
def index_lines(draw: st.DrawFn) -> bytes:
    """Index files of structured random lines: reference, whitespace, label text."""
    refs = st.sampled_from(["test.zip@test/img 0.png", "test.zip@", "@x", "x.png", "a@b@c",
                            "test.zip@test\\img 1.png"]) | st.text(max_size=12)
    labels = st.from_regex(r"\A[0-9,+\- _]{0,6}\Z") | st.text(max_size=4)
    seps = st.sampled_from([" ", "\t", "  ", "\u3000", "\xa0", ""])
    lines = st.lists(st.tuples(refs, seps, labels).map("".join), max_size=8)
    return "\n".join(draw(lines)).encode("utf-8", errors="surrogatepass")


def test_index_structured_lines_fuzz(cifar: tuple[Any, Path]) -> None:
    index = _index(cifar)

    @QUICK
    @given(index_lines())
    def check(data: bytes) -> None:
        _read_split(*cifar, index, data)

    check()


def test_label_map_fuzz(voc: tuple[Any, Path]) -> None:
    labels = _labelmap(voc)

    @QUICK
    @given(contents(labels.read_bytes()))
    def check(data: bytes) -> None:
        _read_split(*voc, labels, data)

    check()


@pytest.mark.slow
def test_index_and_label_map_fuzz_thorough(cifar: tuple[Any, Path],
                                           voc: tuple[Any, Path]) -> None:
    for dataset, fuzzed in ((cifar, _index(cifar)), (voc, _index(voc)), (voc, _labelmap(voc))):
        @THOROUGH
        @given(contents(fuzzed.read_bytes()) | index_lines())
        def check(data: bytes) -> None:
            _read_split(*dataset, fuzzed, data)  # noqa: B023 (run at once, in the loop)

        check()


# --- COCO JSON indexes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def resisc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A tiny multiclass COCO-format dataset."""
    card = tiny_card(find_card("resisc45_clip"), per_class=1)
    root = tmp_path_factory.mktemp("resisc")
    write_dataset(card, root, per_class=1)
    return card, root


@st.composite
def json_edits(draw: st.DrawFn, doc: Any) -> bytes:
    """``doc`` with random values replaced, keys deleted, list entries dropped or repeated."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 4))):
        node, key = doc, None
        # Walk down a random path, then edit the container reached.
        for _ in range(draw(st.integers(0, 3))):
            keys = list(node) if isinstance(node, dict) else list(range(len(node))) \
                if isinstance(node, list) else []
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            if not isinstance(node[key], (dict, list)):
                break
            node = node[key]
        if not isinstance(node, (dict, list)) or not node:
            continue
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["replace", "delete", "repeat"]))
        if action == "replace":
            node[key] = draw(VALUES)
        elif action == "delete":
            del node[key]
        elif isinstance(node, list):
            node.append(node[key])
    return json.dumps(doc).encode()


def test_coco_index_fuzz(resisc: tuple[Any, Path]) -> None:
    index = _index(resisc)
    valid = index.read_bytes()

    @QUICK
    @given(contents(valid) | json_edits(json.loads(valid)))
    def check(data: bytes) -> None:
        _read_split(*resisc, index, data)

    check()


@pytest.mark.slow
def test_coco_index_fuzz_thorough(resisc: tuple[Any, Path]) -> None:
    index = _index(resisc)
    valid = index.read_bytes()

    @THOROUGH
    @given(contents(valid) | json_edits(json.loads(valid)))
    def check(data: bytes) -> None:
        _read_split(*resisc, index, data)

    check()


# --- dataset cards -------------------------------------------------------------------------


def _card_source() -> bytes:
    # A short card (cifar-10's, 2 templates) keeps mutations near the fields that matter.
    doc = yaml.safe_load((CARDS_DIR / "cifar-10.yaml").read_text(encoding="utf-8"))
    doc["templates"] = doc["templates"][:2]
    return yaml.safe_dump(doc, sort_keys=False).encode()


@st.composite
def yaml_edits(draw: st.DrawFn, source: bytes) -> bytes:
    """The card with random fields replaced or deleted, as YAML."""
    doc = yaml.safe_load(source)
    if draw(st.booleans()):  # a whole field or split gone, as in a card written by hand
        del doc[draw(st.sampled_from(sorted(doc)))]
    if "splits" in doc and draw(st.booleans()):
        del doc["splits"][draw(st.sampled_from(sorted(doc["splits"])))]
    edited = json_edits(doc)
    return yaml.safe_dump(json.loads(draw(edited)), sort_keys=False).encode()


def _load_card(path: Path, data: bytes, tmp_path: Path) -> None:
    path.write_bytes(data)
    try:
        card = load_card(path)
    except UserError as exc:
        _check_error(exc, path)
        return
    # A card that loads is a usable task, also as a task file of protocol elevater.
    task = ElevaterTask(card=card)
    for mode in ("zeroshot", "linear_probe"):
        options = {"mode": mode}
        task.variants(options)
        try:
            paths = task.required_paths(tmp_path, options)
        except UserError as exc:  # linear_probe on a card with no train split
            _check_error(exc, path)
        else:
            assert all(isinstance(p, Path) for p in paths)
            assert task.check_files(tmp_path, options) == []  # nothing on disk: not checked
    assert elevater_card_task(yaml.safe_load(data.decode("utf-8-sig")), path).card == card


def test_card_fuzz(tmp_path: Path) -> None:
    source = _card_source()
    path = tmp_path / "card.yaml"

    @QUICK
    @given(contents(source) | yaml_edits(source))
    def check(data: bytes) -> None:
        _load_card(path, data, tmp_path)

    check()


@pytest.mark.slow
def test_card_fuzz_thorough(tmp_path: Path) -> None:
    source = _card_source()
    path = tmp_path / "card.yaml"

    @THOROUGH
    @given(contents(source) | yaml_edits(source))
    def check(data: bytes) -> None:
        _load_card(path, data, tmp_path)

    check()


def test_a_zip_listed_by_the_index_that_is_not_a_zip_is_reported(cifar: tuple[Any, Path]
                                                                  ) -> None:
    card, root = cifar
    zip_path = root / card.root / card.splits["test"].files[0]
    valid = zip_path.read_bytes()
    try:
        zip_path.write_bytes(b"not a zip")
        [problem] = open_split(card, root, "test").missing_images()
        assert str(zip_path) in problem and "download it again" in problem
    finally:
        zip_path.write_bytes(valid)
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.testzip() is None


def test_index_naming_a_zip_longer_than_the_file_system_allows(cifar: tuple[Any, Path]) -> None:
    # Found by the thorough run: looking the zip up raised OSError (File name too long).
    index = _index(cifar)
    lines = index.read_bytes().splitlines(keepends=True)
    _read_split(*cifar, index, b"9" * 5000 + lines[0] + b"".join(lines[1:]))
