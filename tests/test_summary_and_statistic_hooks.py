"""The hooks through which a plugin adds a view of a results folder to ``results`` and
``report`` (``itra_bench_result_summaries``) and a metric recomputed from per-sample
outcomes (``itra_bench_outcome_statistics``): what the host does with them, and clashes and
mistakes reported as the plugin's."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from result_files import write_two_models

from itra_bench.errors import PluginBugError, PluginClashError
from itra_bench.registry import activated, active_registry, load_registry
from itra_bench.sample_outcomes import SampleOutcomes, interval
from itra_bench.summaries import ResultSummary

SUMMARY_PLUGIN = """
    from itra_bench import hookimpl
    from itra_bench.results import iter_records
    from itra_bench.summaries import ResultSummary, Summary, SummaryTable
    from itra_bench.tables import Column

    def summarize(root):
        tasks = sorted({r["task"] for _, r in iter_records(root)})
        if not tasks:
            return None
        table = SummaryTable("<tasks> & co", [Column("task", whole=True),
                                               Column("models", align="right")],
                             [{"task": t, "models": 2} for t in tasks],
                             total={"task": "all", "models": len(tasks)},
                             emphasis=("task", "models"))
        return Summary([table], {FILE: "\\n".join(tasks)},
                       note="Counted by `my-plugin` <b>")

    @hookimpl
    def itra_bench_result_summaries():
        return [ResultSummary(NAME, "My summary", summarize)]
"""

STATISTIC_PLUGIN = """
    from itra_bench import hookimpl
    from itra_bench.outcome_statistics import OutcomeStatistic

    @hookimpl
    def itra_bench_outcome_statistics():
        return [OutcomeStatistic(KIND, METRIC, lambda score, label: label.mean(axis=-1))]
"""


def plugin(tmp_path, monkeypatch, name: str, body: str, **constants: str) -> str:
    """Write the plugin module ``name`` (``constants`` set at its top) on sys.path."""
    head = "".join(f"{key} = {value!r}\n" for key, value in constants.items())
    (tmp_path / f"{name}.py").write_text(head + textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    # Another test may have imported a module of this name from its own folder.
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_results_print_a_plugins_summary_and_write_its_files(cli, tmp_path, monkeypatch):
    mod = plugin(tmp_path, monkeypatch, "my_summary", SUMMARY_PLUGIN, NAME="mine",
                 FILE="tasks.txt")
    root = write_two_models(tmp_path / "results").root
    res = cli("--plugin", mod, "results", root, "--out", tmp_path)
    assert res.code == 0, res
    assert (tmp_path / "tasks.txt").read_text() == "t1\nt2"
    assert "<tasks> & co" in res.out and "all" in res.out, res
    assert f"wrote {tmp_path / 'tasks.txt'}" in " ".join(res.err.split()), res
    # Scripts read one document: the other formats print no summary (its files are written).
    res = cli("--plugin", mod, "results", root, "--out", tmp_path, "--format", "json")
    assert res.code == 0 and "<tasks>" not in res.out, res


def test_the_report_shows_a_plugins_summary_escaped(cli, tmp_path, monkeypatch):
    mod = plugin(tmp_path, monkeypatch, "my_summary", SUMMARY_PLUGIN, NAME="mine",
                 FILE="tasks.txt")
    root = write_two_models(tmp_path / "results").root
    res = cli("--plugin", mod, "report", root, "-o", tmp_path / "r.html")
    assert res.code == 0, res
    text = (tmp_path / "r.html").read_text()
    assert '<section id="mine-summary"><h2>My summary</h2>' in text
    assert "<h3>&lt;tasks&gt; &amp; co</h3>" in text
    assert '<p class="note">Counted by <code>my-plugin</code> &lt;b&gt;</p>' in text
    assert '<td>t1</td><td class="num">2</td>' in text
    assert '<td><b>all</b></td><td class="num best">2</td>' in text  # the total's emphasis
    assert not (tmp_path / "tasks.txt").exists()  # the report writes no summary file


def test_two_summaries_of_one_name_clash(tmp_path, monkeypatch):
    one = plugin(tmp_path, monkeypatch, "summary_one", SUMMARY_PLUGIN, NAME="mine", FILE="a")
    two = plugin(tmp_path, monkeypatch, "summary_two", SUMMARY_PLUGIN, NAME="mine", FILE="b")
    with pytest.raises(PluginClashError) as err:
        load_registry([one, two])
    assert "result summary 'mine'" in str(err.value)
    assert "'summary_one'" in str(err.value) and "'summary_two'" in str(err.value)


def test_two_summaries_writing_one_file_clash(cli, tmp_path, monkeypatch):
    one = plugin(tmp_path, monkeypatch, "summary_one", SUMMARY_PLUGIN, NAME="one", FILE="a")
    two = plugin(tmp_path, monkeypatch, "summary_two", SUMMARY_PLUGIN, NAME="two", FILE="a")
    root = write_two_models(tmp_path / "results").root
    res = cli("--plugin", one, "--plugin", two, "results", root, "--out", tmp_path)
    message = " ".join(res.err.split())
    assert res.code == 2 and "summary file 'a'" in message and "'one'" in message, res


@pytest.mark.parametrize(("body", "problem"), [
    (SUMMARY_PLUGIN.replace("tasks = sorted", "1 / 0\n        tasks = sorted"),
     "raised ZeroDivisionError"),
    (SUMMARY_PLUGIN.replace("return Summary(", "return 'text' or Summary("), "returned a str"),
])
def test_a_failing_summary_is_its_plugins_bug(cli, tmp_path, monkeypatch, body, problem):
    mod = plugin(tmp_path, monkeypatch, "bad_summary", body, NAME="mine", FILE="a")
    root = write_two_models(tmp_path / "results").root
    res = cli("--plugin", mod, "results", root, "--out", tmp_path)
    message = " ".join(res.err.split())
    assert res.code == 3 and "plugin bug" in message and "'mine'" in message, res
    assert problem in message and "bad_summary" in message, res


def test_a_summary_file_outside_the_output_folder_is_refused(cli, tmp_path, monkeypatch):
    mod = plugin(tmp_path, monkeypatch, "escaping", SUMMARY_PLUGIN, NAME="mine",
                 FILE="../escaped.txt")
    (tmp_path / "out").mkdir()
    root = write_two_models(tmp_path / "results").root
    res = cli("--plugin", mod, "results", root, "--out", tmp_path / "out")
    assert res.code == 3 and "'../escaped.txt'" in res.err, res
    assert not (tmp_path / "escaped.txt").exists()


def test_a_summary_name_must_name_a_report_section():
    with pytest.raises(ValueError, match="lowercase letters"):
        ResultSummary("My Summary", "title", lambda root: None)


def _binary(n: int = 30) -> SampleOutcomes:
    labels = np.arange(n) % 3 == 0
    return SampleOutcomes("binary_scores", {"score": np.linspace(0, 1, n),
                                            "label": labels.astype(int)})


def test_a_plugins_statistic_is_used_while_its_registry_is_active(tmp_path, monkeypatch):
    mod = plugin(tmp_path, monkeypatch, "rate", STATISTIC_PLUGIN, KIND="binary_scores",
                 METRIC="positive_rate")
    outcomes = _binary()
    with activated(load_registry([mod], lazy=True)):
        assert outcomes.value("positive_rate") == pytest.approx(1 / 3)
        ci = interval(outcomes, "positive_rate", resamples=200)
        assert ci is not None and ci.low < 1 / 3 < ci.high
        assert outcomes.value("roc_auc") is not None  # the kind's own metrics stay
    with activated(load_registry(lazy=True)):
        assert outcomes.value("positive_rate") is None
        assert interval(outcomes, "positive_rate") is None


def test_outside_a_command_the_installed_plugins_statistics_are_used():
    assert active_registry() is None
    labels = (np.arange(24).reshape(8, 3) % 4 == 0).astype(np.int8)
    outcomes = SampleOutcomes("multilabel", {"scores": np.eye(8, 3) + 0.1, "labels": labels})
    assert outcomes.value("11point_mAP") is not None


def test_a_statistic_two_plugins_provide_clashes(tmp_path, monkeypatch):
    mod = plugin(tmp_path, monkeypatch, "my_map", STATISTIC_PLUGIN, KIND="multilabel",
                 METRIC="11point_mAP")
    with pytest.raises(PluginClashError) as err:
        load_registry([mod])
    assert "outcome statistic 'multilabel:11point_mAP'" in str(err.value)
    assert "'elevater_tasks'" in str(err.value) and "'my_map'" in str(err.value)


def test_a_statistic_of_an_unknown_kind_is_its_plugins_bug(tmp_path, monkeypatch):
    mod = plugin(tmp_path, monkeypatch, "typo", STATISTIC_PLUGIN, KIND="multi_label",
                 METRIC="my_map")
    with activated(load_registry([mod], lazy=True)), \
            pytest.raises(PluginBugError, match="'multi_label', which is not one"):
        _binary().value("my_map")


RATE_TASK_PLUGIN = STATISTIC_PLUGIN + """
    import numpy as np

    from itra_bench.sample_outcomes import SampleOutcomes
    from itra_bench.task import Task, TaskResult

    class RateTask(Task):
        name = "rate-task"
        main_score = METRIC
        modalities = frozenset({"image"})

        def run(self, model, ctx):
            labels = (np.arange(30) % 3 == 0).astype(int)
            outcomes = SampleOutcomes(KIND, {"score": np.linspace(0, 1, 30), "label": labels})
            return TaskResult({METRIC: float(labels.mean())}, METRIC, 30, samples=outcomes)

    @hookimpl
    def itra_bench_tasks():
        return [RateTask()]

    @hookimpl
    def itra_bench_metrics():
        from itra_bench import Metric

        return [Metric(METRIC, "the share of positive labels", outcome_kinds=(KIND,))]
"""


def test_a_run_takes_statistics_from_the_registry_it_is_given(tmp_path, monkeypatch):
    # The trainer evaluates with a registry of its own (its --plugin modules), not the
    # installed plugins: the main score's interval comes from that registry's plugin.
    from rich.console import Console

    from itra_bench.runner import RunConfig, run

    mod = plugin(tmp_path, monkeypatch, "rate_task", RATE_TASK_PLUGIN, KIND="binary_scores",
                 METRIC="positive_rate")
    registry = load_registry(["itra_test_plugin", mod])
    config = RunConfig(model="pixel", tasks=["rate-task"], output=str(tmp_path / "out"),
                       cache_dir=None, workers=0, resamples=100)
    (outcome,) = run(config, registry, Console(quiet=True), show_progress=False)
    assert outcome.status == "done" and outcome.value == pytest.approx(1 / 3)
    assert outcome.low is not None and outcome.low < 1 / 3 < outcome.high
