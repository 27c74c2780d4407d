"""The built-in ELEVATER dataset cards: complete, consistent with the registry, and strict."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from itra_bench.errors import UnknownNameError, UserError
from itra_bench.task_fields import key_rows
from itra_bench.vision_benchmark.cards import (
    CARDS_DIR,
    WHAT,
    DatasetCard,
    SplitFiles,
    builtin_cards,
    find_card,
    load_card,
)

# The spec: ELEVATER's 20 image-classification datasets and their class counts.
ELEVATER_CLASSES = {
    "caltech-101": 102,
    "cifar-10": 10,
    "cifar-100": 100,
    "country211": 211,
    "dtd": 47,
    "eurosat_clip": 10,
    "fer-2013": 7,
    "fgvc-aircraft-2013b-variants102": 100,
    "oxford-flower-102": 102,
    "food-101": 101,
    "gtsrb": 43,
    "hateful-memes": 2,
    "kitti-distance": 4,
    "mnist": 10,
    "oxford-iiit-pets": 37,
    "patch-camelyon": 2,
    "rendered-sst2": 2,
    "resisc45_clip": 45,
    "stanford-cars": 196,
    "voc-2007-classification": 20,
}
ALL_CLASSES = {**ELEVATER_CLASSES, "imagenet-1k": 1000}

# ELEVATER's TEST.METRIC per dataset (resources/datasets/*.yaml); the rest use accuracy.
METRICS = {
    "caltech-101": "mean_per_class",
    "fgvc-aircraft-2013b-variants102": "mean_per_class",
    "oxford-flower-102": "mean_per_class",
    "oxford-iiit-pets": "mean_per_class",
    "voc-2007-classification": "11point_mAP",
    "hateful-memes": "roc_auc",
}

#: The fields of ELEVATER's dataset registry (the toolkit's vision_datasets.json) that a card
#: must repeat: name, type, root folder, format, label map, class count, and per split the
#: index, the files and the image count.
REGISTRY = Path(__file__).parent / "data" / "elevater_vision_datasets.json"


@pytest.fixture(scope="module")
def cards():
    return {c.name: c for c in builtin_cards()}


def test_all_cards_load(cards):
    files = sorted(CARDS_DIR.glob("*.yaml"))
    assert {p.stem for p in files} == set(ALL_CLASSES)
    for path in files:
        card = load_card(path)
        assert card.name == path.stem, f"{path.name} holds card {card.name!r}"
    assert set(cards) == set(ALL_CLASSES)


def test_elevater_suite_and_class_counts(cards):
    elevater = {name for name, c in cards.items() if "elevater" in c.suites}
    assert elevater == set(ELEVATER_CLASSES)
    assert "elevater" not in cards["imagenet-1k"].suites
    for name, n in ALL_CLASSES.items():
        card = cards[name]
        assert card.num_classes == n, name
        assert len(card.classnames) == n, name
        assert all(c.strip() for c in card.classnames), name


def test_metrics_and_types(cards):
    for name, card in cards.items():
        assert card.metric == METRICS.get(name, "accuracy"), name
    assert cards["voc-2007-classification"].multilabel
    assert not any(c.multilabel for n, c in cards.items() if n != "voc-2007-classification")


def test_templates_have_a_slot(cards):
    for card in cards.values():
        assert card.templates, card.name
        for t in card.templates:
            assert "{}" in t, (card.name, t)
            assert t.format("x")  # formats with exactly one positional slot
    assert len(cards["imagenet-1k"].templates) == 80


def test_every_card_names_its_source(cards):
    for card in cards.values():
        assert "prompts.py" in card.source, card.name
        assert "vision_datasets.json" in card.source, card.name


def test_aliases_unique_and_findable(cards):
    owners: dict[str, str] = {}
    for card in cards.values():
        for key in (card.name, *card.aliases):
            assert key not in owners, f"{key!r} used by {owners[key]} and {card.name}"
            owners[key] = card.name
    assert find_card("cifar10").name == "cifar-10"
    assert find_card("voc2007classification").name == "voc-2007-classification"
    assert find_card("eurosat-clip").name == "eurosat_clip"
    assert find_card("caltech101").name == "caltech-101"
    assert find_card("kitti-distance").name == "kitti-distance"
    with pytest.raises(UnknownNameError) as exc:
        find_card("cifar-1O")
    assert "cifar-10" in str(exc.value)


def test_fer_synonyms_kept(cards):
    fer = cards["fer-2013"]
    synonyms = fer.extra["classname_synonyms"]
    assert [s[0] for s in synonyms] == list(fer.classnames)
    assert ["happy", "smiling"] in synonyms


def test_on_disk_fields_match_elevater_registry(cards):
    registry = {d["name"]: d for d in json.loads(REGISTRY.read_text(encoding="utf-8"))}
    assert set(registry) == set(ALL_CLASSES)
    types = {"classification_multiclass": "multiclass",
             "classification_multilabel": "multilabel"}
    for name, entry in registry.items():
        card = cards[name]
        assert card.root == entry["root_folder"], name
        assert card.type == types[entry["type"]], name
        assert card.format == entry.get("format", "index"), name
        assert card.labelmap == entry.get("labelmap"), name
        if "num_classes" in entry:
            assert card.num_classes == entry["num_classes"], name
        expected_splits = {s for s in ("train", "val", "test") if s in entry}
        assert set(card.splits) == expected_splits, name
        for split in expected_splits:
            spec, ref = card.splits[split], entry[split]
            assert spec.index == ref["index_path"], (name, split)
            assert list(spec.files) == ref["files_for_local_usage"], (name, split)
            assert spec.num_images == ref["num_images"], (name, split)


def _write_card(tmp_path: Path, **changes) -> Path:
    doc = yaml.safe_load((CARDS_DIR / "cifar-10.yaml").read_text(encoding="utf-8"))
    doc.update(changes)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_wrong_classnames_length_names_file_and_field(tmp_path):
    path = _write_card(tmp_path, classnames=["airplane", "automobile"])
    with pytest.raises(UserError) as exc:
        load_card(path)
    msg = str(exc.value)
    assert str(path) in msg and "classnames" in msg and "10" in msg


def test_unknown_field_names_file_and_field(tmp_path):
    path = _write_card(tmp_path, metrc="accuracy")
    with pytest.raises(UserError) as exc:
        load_card(path)
    msg = str(exc.value)
    assert str(path) in msg and "metrc" in msg and "metric" in msg


def test_bad_metric_value_names_file_and_field(tmp_path):
    path = _write_card(tmp_path, metric="top1")
    with pytest.raises(UserError) as exc:
        load_card(path)
    msg = str(exc.value)
    assert str(path) in msg and "'metric'" in msg and "mean_per_class" in msg


def test_template_without_slot_is_rejected(tmp_path):
    path = _write_card(tmp_path, templates=["a photo of a thing."])
    with pytest.raises(UserError) as exc:
        load_card(path)
    assert str(path) in str(exc.value) and "template" in str(exc.value)


#: A card's keys, in the order messages list them.
CARD_KEYS = ["name", "task_type", "aliases", "suites", "type", "num_classes", "metric", "format",
             "root", "labelmap", "splits", "classnames", "templates", "source", "extra"]


def test_the_card_dataclasses_are_the_schema():
    assert [r.key for r in key_rows(DatasetCard)] == CARD_KEYS
    assert [r.key for r in key_rows(SplitFiles)] == ["index", "files", "num_images"]
    assert all(r.help for r in [*key_rows(DatasetCard), *key_rows(SplitFiles)])
    # Required in a file although the dataclass has a default: the image count.
    assert {r.key for r in key_rows(SplitFiles) if r.required} == {"index", "num_images"}


def test_unknown_field_message_lists_the_keys_in_order(tmp_path):
    path = _write_card(tmp_path, metrc="accuracy")
    with pytest.raises(UserError) as exc:
        load_card(path)
    assert str(exc.value) == (f"{path}: unknown key 'metrc' (did you mean 'metric'?) for {WHAT}; "
                              f"valid keys: {', '.join(CARD_KEYS)}")


@pytest.mark.parametrize(("split", "message"), [
    ({"index": "t.txt"},
     "{path}: missing required key 'num_images' for split 'test' of a dataset card"),
    ({"index": "t.txt", "num_images": 1, "files": ["a.zip", 3]},
     "dataset card {path}: split 'test': 'files' must be a list of file names"),
    ({"index": "t.txt", "num_images": -1}, "dataset card {path}: split 'test': 'num_images' "
     "must be the number of images its index lists (0: not distributed), got -1"),
])
def test_a_wrong_split_names_the_split(tmp_path, split, message):
    path = _write_card(tmp_path, splits={"test": split})
    with pytest.raises(UserError) as exc:
        load_card(path)
    assert str(exc.value) == message.format(path=path)


def test_one_zip_may_be_named_as_a_string(tmp_path):
    path = _write_card(tmp_path, splits={"test": {"index": "t.txt", "files": "val.zip",
                                                  "num_images": 10000}})
    assert load_card(path).splits["test"] == SplitFiles("t.txt", ("val.zip",), 10000)


def test_the_task_type_key_is_no_part_of_the_task_definition():
    # Always elevater: the definition (what a stored result is compared against) is that of
    # the card's other fields, as before the key was a field.
    from itra_bench.task_identity import task_definition
    from itra_bench.vision_benchmark.task import ElevaterTask

    card = find_card("cifar-10")
    assert card.task_type == "elevater"
    assert task_definition(ElevaterTask(card=card)) == task_definition(
        ElevaterTask(card=replace(card, task_type="other")))


def test_a_cards_task_definition_does_not_depend_on_where_the_card_lies(tmp_path):
    # Before, the card's file path was part of the definition: the same built-in card in
    # another checkout or virtual environment gave another definition, so its stored results
    # were recomputed and results from two machines could not be compared.
    import shutil

    from itra_bench.task_identity import task_definition
    from itra_bench.vision_benchmark.cards import CARDS_DIR, load_card
    from itra_bench.vision_benchmark.task import ElevaterTask

    here = load_card(CARDS_DIR / "cifar-10.yaml")
    (tmp_path / "elsewhere").mkdir()
    copy = shutil.copy(CARDS_DIR / "cifar-10.yaml", tmp_path / "elsewhere" / "cifar-10.yaml")
    there = load_card(copy)
    assert here.path != there.path
    assert task_definition(ElevaterTask(card=here)) == task_definition(ElevaterTask(card=there))
    # What the card says still counts.
    changed = Path(copy).read_text().replace("a photo of a {}.", "a blurry photo of a {}.")
    Path(copy).write_text(changed)
    assert task_definition(ElevaterTask(card=load_card(copy))) != \
        task_definition(ElevaterTask(card=here))
