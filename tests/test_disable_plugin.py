"""``--disable-plugin NAME`` removes everything the plugin NAME contributes: for every built-in
entry point, its models, losses, tasks, commands, task prefixes and protocols, result
summaries and outcome statistics; for ELEVATER (``elevater_tasks``) also the ``submit``
command, the summary of ``results`` and ``report``, and the intervals of 11-point mAP."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from result_files import write_result

from itra_bench.registry import Registry, activated, load_registry
from itra_bench.results import ResultStore
from itra_bench.sample_outcomes import (
    OutcomeMismatchError,
    SampleOutcomes,
    check_outcomes,
    compare,
    interval,
    samples_path,
    write_outcomes,
)

ELEVATER = "elevater_tasks"
#: The registry's tables of what plugins contribute, each keyed by name.
KINDS = ("models", "losses", "tasks", "commands", "task_prefixes", "task_file_protocols",
         "result_summaries", "outcome_statistics")
BUILTINS = sorted(ep.name for ep in entry_points(group="itra_bench")
                  if ep.dist is not None and ep.dist.metadata["Name"] == "itra-bench")


@pytest.fixture(scope="module")
def everything() -> Registry:
    return load_registry()


def test_the_builtins_include_elevater():
    assert ELEVATER in BUILTINS and len(BUILTINS) > 10


@pytest.mark.parametrize("name", BUILTINS)
def test_disabling_a_builtin_removes_all_it_contributes_and_nothing_else(everything, name):
    without = load_registry(disabled=[name])
    assert name in everything.plugins and name not in without.plugins
    contributed = 0
    for kind in KINDS:
        table = getattr(everything, kind)
        own = {key for key, provided in table.items() if provided.plugin.name == name}
        contributed += len(own)
        assert set(getattr(without, kind)) == set(table) - own, kind
        for key, provided in getattr(without, kind).items():
            assert provided.plugin == table[key].plugin, (kind, key)
    assert contributed, f"{name} contributes nothing that the test sees"
    own_tasks = {t for t, p in everything.tasks.items() if p.plugin.name == name}
    assert not own_tasks & set(without.aliases.values())
    assert all(not own_tasks & set(members) for members in without.suites.values())


def test_elevater_contributes_submit_its_summary_and_its_statistic(everything):
    assert everything.commands["submit"].plugin.name == ELEVATER
    assert everything.result_summaries["elevater"].plugin.name == ELEVATER
    assert everything.outcome_statistics["multilabel:11point_mAP"].plugin.name == ELEVATER
    assert everything.tasks["voc-2007-classification"].plugin.name == ELEVATER


def test_submit_is_an_unknown_command_without_elevater(cli, tmp_path):
    res = cli("submit", tmp_path / "nowhere")
    assert res.code == 2 and "folder not found" in res.err, res
    res = cli("--disable-plugin", ELEVATER, "submit", tmp_path / "nowhere")
    assert res.code == 2 and "invalid choice: 'submit'" in res.err, res


@pytest.fixture
def elevater_results(tmp_path) -> Path:
    """Zero-shot ELEVATER results of one model on two datasets, and one other result."""
    store = ResultStore(tmp_path / "results")
    for task, value in (("cifar-10", 0.5), ("dtd", 0.25)):
        write_result(store, "clip", task, value, protocol="elevater", suites=["elevater"],
                     variant="zeroshot", details={"mode": "zeroshot", "n_shot": 0, "seed": 0})
    write_result(store, "clip", "t1", 0.5)
    return store.root


def test_results_write_no_elevater_summary_without_elevater(cli, elevater_results, tmp_path):
    for flags, present in (((), True), (("--disable-plugin", ELEVATER), False)):
        out = tmp_path / f"out-{present}"
        out.mkdir()
        res = cli(*flags, "results", elevater_results, "--out", out)
        assert res.code == 0, res
        assert (out / "leaderboard.csv").is_file()
        for suffix in ("md", "csv"):
            assert (out / f"elevater_summary.{suffix}").is_file() is present
        assert ("ELEVATER clip: zeroshot" in res.out) is present, res
        assert ("37.50" in res.out) is present, res  # the average over the two datasets


def test_the_report_has_no_elevater_section_without_elevater(cli, elevater_results, tmp_path):
    for flags, present in (((), True), (("--disable-plugin", ELEVATER), False)):
        page = tmp_path / f"report-{present}.html"
        res = cli(*flags, "report", elevater_results, "-o", page)
        assert res.code == 0, res
        text = page.read_text()
        assert ('id="elevater-summary"' in text) is present
        assert ("ELEVATER clip: zeroshot" in text) is present
        assert 'id="leaderboard"' in text


def _multilabel(seed: int) -> SampleOutcomes:
    """40 images, 3 classes: the same labels for every seed, the seed's scores."""
    labels = (np.random.default_rng(0).random((40, 3)) < 0.4).astype(np.int8)
    scores = np.round(np.random.default_rng(seed).random((40, 3)) * 0.5 + 0.5 * labels, 2)
    return SampleOutcomes("multilabel", {"scores": scores, "labels": labels})


def test_eleven_point_map_gets_no_interval_without_elevater():
    a, b = _multilabel(0), _multilabel(1)
    with activated(load_registry(lazy=True)):
        value = a.value("11point_mAP")
        ci = interval(a, "11point_mAP", resamples=50)
        assert value is not None and ci is not None and ci.estimate == value
        check_outcomes(a, {"11point_mAP": value}, "11point_mAP")
        assert compare(a, b, "11point_mAP", resamples=50).p_value is not None
    with activated(load_registry(disabled=[ELEVATER], lazy=True)):
        assert a.value("11point_mAP") is None
        assert interval(a, "11point_mAP", resamples=50) is None
        with pytest.raises(ValueError, match="no loaded plugin recomputes it"):
            check_outcomes(a, {"11point_mAP": value}, "11point_mAP")
        with pytest.raises(OutcomeMismatchError, match="no loaded plugin recomputes it"):
            compare(a, b, "11point_mAP", resamples=50)


def test_compare_of_eleven_point_map_says_why_without_elevater(cli, tmp_path):
    store = ResultStore(tmp_path / "results")
    for model, seed in (("a", 0), ("b", 1)):
        path = write_result(store, model, "voc-2007-classification", 0.5,
                            fingerprint=model * 16, main_score="11point_mAP",
                            metrics={"11point_mAP": 0.5})
        samples = write_outcomes(samples_path(path), _multilabel(seed))
        store.write(path, {**store.read(path), "samples": samples})
    res = cli("compare", store.root, "--models", "a", "b", "--resamples", "50")
    assert res.code == 0, res
    res = cli("--disable-plugin", ELEVATER, "compare", store.root, "--models", "a", "b",
              "--resamples", "50")
    assert res.code == 2, res
    message = " ".join(res.err.split())
    assert "voc-2007-classification" in message and "11point_mAP" in message, res
    assert "no loaded plugin recomputes it" in message, res
