"""The task files and dataset cards shipped with itra-bench are parsed by libyaml (ten times
faster: `itra-bench list tasks` reads 39 of them), with the pure-Python parser's documents and
error messages; a user's YAML file is parsed by the pure-Python parser, as before, because
the two disagree on some inputs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import itra_bench.tasks
from itra_bench.datasets import text_files
from itra_bench.errors import UserError
from itra_bench.tasks import load_cards
from itra_bench.tasks.sts import plugin as sts
from itra_bench.vision_benchmark import cards
from itra_bench.yaml_tasks import load_task_file

TASK_CARDS = Path(itra_bench.tasks.__file__).parent.glob("*/cards/*.yaml")
SHIPPED = sorted([*TASK_CARDS, *cards.CARDS_DIR.glob("*.yaml")])
needs_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__, reason="libyaml not installed")


def test_the_shipped_files_are_found():
    assert len(SHIPPED) >= 39


@needs_libyaml
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_libyaml_reads_each_shipped_file_as_the_pure_parser_does(path):
    text = path.read_text(encoding="utf-8-sig")
    assert yaml.load(text, Loader=yaml.CSafeLoader) == yaml.safe_load(text)
    assert text_files.load_yaml(text, shipped=True) == yaml.safe_load(text)


@needs_libyaml
def test_shipped_files_are_parsed_by_libyaml(monkeypatch):
    used = []
    monkeypatch.setattr(yaml, "safe_load", lambda text: used.append(text))
    cards.load_card(cards.CARDS_DIR / "cifar-10.yaml")
    load_cards(sts.CARDS_DIR, {sts.PROTOCOL: lambda doc, path: SimpleNamespace(name=doc["name"])})
    assert used == []


# Inputs libyaml accepts and the pure-Python parser refuses (a '?' inside a flow plain
# scalar, a tab inside a plain key): a user's file must still be refused.
DIVERGENT = ("name: my-pets\nprotocol: zeroshot\nroot: pets\ntemplates: [a photo of a?{}]\n",
             "name: my-pets\nprotocol: zeroshot\nroot: pets\nspl\tit: test\n")


@pytest.mark.parametrize("text", DIVERGENT)
def test_a_users_task_file_is_parsed_by_the_pure_parser(tmp_path, text):
    path = tmp_path / "pets.yaml"
    path.write_text(text)
    with pytest.raises(yaml.YAMLError) as pure:
        yaml.safe_load(text)
    with pytest.raises(UserError) as err:
        load_task_file(path)
    assert str(err.value) == f"{path}: not valid YAML ({pure.value})"


@pytest.mark.parametrize("text", DIVERGENT)
def test_a_users_card_is_parsed_by_the_pure_parser(tmp_path, text):
    path = tmp_path / "card.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="not valid YAML"):
        cards.load_card(path)


BROKEN = "name: cifar-10\nprotocol: elevater\nsuites: [elevater\ntype: multiclass\n"


def test_a_broken_shipped_file_gets_the_pure_parsers_message(tmp_path, monkeypatch):
    # Same message, snippet and marks as any other file: libyaml's own message is worded
    # differently and shows no snippet.
    monkeypatch.setattr(cards, "CARDS_DIR", tmp_path)
    path = tmp_path / "cifar-10.yaml"
    path.write_text(BROKEN)
    with pytest.raises(yaml.YAMLError) as pure:
        yaml.safe_load(BROKEN)
    assert "line 3, column 9:" in str(pure.value) and "^" in str(pure.value)
    with pytest.raises(UserError) as err:
        cards.load_card(path)
    assert str(pure.value) in str(err.value)
    with pytest.raises(yaml.YAMLError) as fast:
        text_files.load_yaml(BROKEN, shipped=True)
    assert str(fast.value) == str(pure.value)


def test_without_libyaml_the_pure_parser_is_used(monkeypatch):
    monkeypatch.setattr(text_files, "_fast_loader", lambda: None)
    path = Path(cards.CARDS_DIR / "cifar-10.yaml")
    text = path.read_text(encoding="utf-8-sig")
    assert text_files.load_yaml(text, shipped=True) == yaml.safe_load(text)
