"""Result files that do not match the result schema are left out with a warning naming the
file and the field, by every command that reads results (`results`, `report`, `compare`,
and `run` finding an earlier result), instead of failing with a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from result_files import write_two_models

from itra_bench.results import InvalidResultError, ResultStore

PIXEL = ("--plugin", "itra_test_plugin")


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_two_models(tmp_path / "results").root


def _spoil(folder: Path, change: dict) -> Path:
    """Apply ``change`` (dotted field -> value, or None to delete) to model b's t2 result."""
    path = next(p for p in folder.rglob("t2/default.json") if "/b-" in str(p))
    record = json.loads(path.read_text())
    for field, value in change.items():
        *parents, last = field.split(".")
        target = record
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    path.write_text(json.dumps(record))
    return path


SPOILED = [({"model": "a-string"}, "model"),
           ({"model.name": None}, "model.name"),
           ({"model.fingerprint": 7}, "model.fingerprint"),
           ({"main_score_interval.low": None}, "main_score_interval.low"),
           ({"main_score_interval.high": "high"}, "main_score_interval.high"),
           ({"metrics": {"acc1": "x"}}, "metrics"),
           ({"main_score_value": [1]}, "main_score_value"),
           ({"suites": "mine"}, "suites"),
           ({"suite_members": {"mine": "t1"}}, "suite_members"),
           ({"samples": 3}, "samples"),
           ({"task": 3}, "task")]


@pytest.mark.parametrize(("change", "field"), SPOILED, ids=[f for _, f in SPOILED])
@pytest.mark.parametrize("command", ["results", "report"])
def test_results_and_report_leave_out_a_result_off_the_schema(cli, folder, tmp_path, change,
                                                             field, command):
    path = _spoil(folder, change)
    args = ["--out", tmp_path / "out"] if command == "results" else ["--out",
                                                                    tmp_path / "r.html"]
    res = cli(command, folder, *args)
    assert res.code == 0, res
    assert str(path) in res.err and field in res.err, res.err
    assert "Traceback" not in res.err


@pytest.mark.parametrize(("change", "field"), SPOILED[:4], ids=[f for _, f in SPOILED[:4]])
def test_compare_leaves_out_a_result_off_the_schema(cli, folder, change, field):
    path = _spoil(folder, change)
    res = cli("compare", folder, "--models", "a", "b", "--format", "json", "--resamples", "20")
    assert res.code == 0, res
    assert str(path) in res.err and field in res.err, res.err
    assert [r["task"] for r in json.loads(res.out) if not r["task"].startswith("avg:")] \
        == ["t1"]


def test_the_check_names_the_file_and_field(folder):
    path = _spoil(folder, {"main_score_interval.low": None})
    with pytest.raises(InvalidResultError) as info:
        ResultStore(folder).read(path)
    assert str(path) in str(info.value) and "main_score_interval.low" in str(info.value)


def test_run_recomputes_a_stored_result_off_the_schema(cli, tmp_path):
    out = tmp_path / "out"
    args = ("run", *PIXEL, "--model", "pixel", "--tasks", "digits-zeroshot", "--output", out,
            "--no-cache", "--workers", "0", "--no-progress")
    assert cli(*args).code == 0
    path = next(out.rglob("digits-zeroshot/*.json"))
    record = json.loads(path.read_text())
    record["model"] = "pixel"
    path.write_text(json.dumps(record))
    res = cli(*args)
    assert res.code == 0, res
    assert str(path) in res.err and "model" in res.err, res.err
    assert path.with_name(path.name + ".corrupt").exists()
    assert isinstance(json.loads(path.read_text())["model"], dict)


def _damage(data: bytes, where: str, value: int) -> bytes:
    """``data`` (a zip archive) with one byte of its first member's headers set to
    ``value``: ``local+N`` counts from the local header, ``central+N`` from the central
    directory's."""
    base, offset = where.split("+")
    i = (0 if base == "local" else data.index(b"PK\x01\x02")) + int(offset)
    return data[:i] + bytes([value]) + data[i + 1:]


# Found by fuzzing: zlib.error, EOFError, NotImplementedError and RuntimeError escaped.
DAMAGE = {"zlib": ("local+28", 0), "eof": ("local+29", 255),
          "version": ("central+6", 255), "encrypted": ("central+8", 1)}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_compare_refuses_a_damaged_samples_file_whose_hash_matches(cli, folder, name):
    import hashlib

    from itra_bench.sample_outcomes import samples_path

    path = next(p for p in folder.rglob("t2/default.json") if "/b-" in str(p))
    samples = samples_path(path)
    samples.write_bytes(_damage(samples.read_bytes(), *DAMAGE[name]))
    record = json.loads(path.read_text())
    record["samples"]["sha256"] = hashlib.sha256(samples.read_bytes()).hexdigest()
    path.write_text(json.dumps(record))
    res = cli("compare", folder, "--models", "a", "b", "--resamples", "20")
    assert res.code == 2, res
    assert str(samples) in res.err and "is not a samples file" in res.err, res.err
