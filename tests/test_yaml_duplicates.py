"""A key given twice in a YAML file the project reads is refused (naming the file, the line
and the key) instead of the last value silently winning."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from itra_bench.datasets.text_files import load_yaml
from itra_bench.errors import UserError

TASK = ("name: my-caps\nprotocol: retrieval\nname: other-caps\nfile: captions.tsv\n")


def _says_duplicate(message: str, path: Path, line: int, key: str) -> None:
    assert str(path) in message, message
    assert f"line {line}" in message, message
    assert repr(key) in message, message


def test_a_task_file_naming_itself_twice_is_refused(cli, tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(TASK)
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", path,
              "--output", tmp_path / "out")
    assert res.code == 2, res
    assert "Traceback" not in res.err
    _says_duplicate(res.err, path, 3, "name")


def _suite_file(path: Path) -> object:
    from itra_bench.yaml_tasks import load_suite_file

    return load_suite_file(path)


def _dataset_card(path: Path) -> object:
    from itra_bench.vision_benchmark.cards import load_card

    return load_card(path)


def _training_config(path: Path) -> object:
    from itra_train.config import defaults, merge_file

    return merge_file(defaults(), str(path))


@pytest.mark.parametrize(("load", "text", "line", "key"), [
    pytest.param(_suite_file, "suite: mine\ntasks: [a]\nsuite: yours\n", 3, "suite",
                 id="suite-file"),
    pytest.param(_dataset_card, "name: pets\nsplits:\n  test: a\n  test: b\n", 4, "test",
                 id="dataset-card-nested"),
    pytest.param(_training_config, "epochs: 1\nlr: 0.1\nepochs: 5\n", 3, "epochs",
                 id="training-config"),
])
def test_a_file_with_a_repeated_key_is_refused(tmp_path, load, text, line, key):
    path = tmp_path / "file.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load(path)
    _says_duplicate(str(info.value), path, line, key)


@pytest.mark.parametrize("shipped", [False, True])
def test_both_parsers_refuse_a_repeated_key(shipped):
    with pytest.raises(yaml.YAMLError, match="'b'"):
        load_yaml("a: 1\nb: 2\nb: 3\n", shipped=shipped)


def test_merge_keys_may_still_be_overridden():
    doc = load_yaml("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n")
    assert doc["use"] == {"x": 1, "y": 3}
