"""One word per concept: the metric registry (every metric a built-in task reports is
declared; an undeclared one is its plugin's bug; clashes name both), the renamed words read
from old result files, samples files, task files and settings, and the docs' table."""

from __future__ import annotations

import json
import shutil
import textwrap
import warnings
from pathlib import Path

import doc_pages
import numpy as np
import pytest
import torch

from itra_bench.errors import PluginClashError, UserError
from itra_bench.metric_names import (
    HOST_METRICS,
    Metric,
    find_metric,
    higher_is_better,
    undeclared,
)
from itra_bench.outcome_kinds import KINDS
from itra_bench.registry import load_registry
from itra_bench.results import iter_records
from itra_bench.sample_outcomes import read_outcomes
from itra_bench.vocabulary import (
    VOCABULARY,
    RenamedWordWarning,
    current_record,
    noted_renames,
)
from itra_bench.yaml_tasks import load_task_file

OLD = Path(__file__).parent / "data" / "results_v1"


def _plugin(tmp_path, monkeypatch, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# -- the metric registry ------------------------------------------------------------------

def _reported_by_the_shared_protocols() -> set[str]:
    """The metric names the shared protocols and the built-in benchmarks' scorers return,
    from calling each on a little data."""
    from itra_bench.protocols.classification_metrics import classification_metrics
    from itra_bench.protocols.clustering import clustering_scores
    from itra_bench.protocols.linear_probe import linear_probe
    from itra_bench.protocols.retrieval import retrieval_metrics
    from itra_bench.protocols.similarity import sts_correlations
    from itra_bench.tasks.msmarco.ranking import ranking_metrics
    from itra_bench.tasks.snli_ve.entailment import entailment_metrics
    from itra_bench.tasks.tapc.vqa_accuracy import vqa_accuracy_metrics
    from itra_bench.vision_benchmark.cards import find_card
    from itra_bench.vision_benchmark.task import score_predictions

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 8, generator=gen), torch.arange(40) % 5
    names = set(classification_metrics(torch.randn(40, 5, generator=gen), y))
    names |= set(clustering_scores(x, y))
    names |= set(linear_probe(x, y, x, y, 5, seed=0, device="cpu"))
    names |= set(retrieval_metrics(x[:10], x[10:30], torch.arange(20) % 10))
    names |= set(sts_correlations([torch.rand(9, generator=gen)], [torch.rand(9, generator=gen)]))
    names |= set(entailment_metrics(torch.arange(9) % 3, torch.arange(9) % 3))
    names |= set(ranking_metrics({"q": ["a", "b"]}, {"q": {"b": 1}}))
    names |= set(vqa_accuracy_metrics([1.0, 0.3, 0.0], ["yes/no", "number", "other"]))
    for card in ("cifar-10", "caltech-101", "voc-2007-classification", "hateful-memes"):
        card = find_card(card)
        probs = torch.softmax(torch.randn(12, card.num_classes, generator=gen), dim=1)
        targets = ((torch.rand(12, card.num_classes, generator=gen) < 0.5).long()
                   if card.multilabel else torch.arange(12) % card.num_classes)
        names |= set(score_predictions(card, probs, targets))
    # Set by the tasks themselves (tasks/snli_ve/plugin.py; the triplets' acc1 is in the
    # results below).
    return names | {"dev_acc1", "text_premise_acc1", "dev_text_premise_acc1"}


def test_every_metric_the_built_in_tasks_report_is_declared():
    registry = load_registry()
    stored = {name for _, r in iter_records(OLD) for name in r["metrics"]}
    reported = _reported_by_the_shared_protocols() | stored
    assert {"acc1", "11point_mAP_unrounded", "mrr@10", "vqa_acc_yes_no", "recall_neutral",
            "image_retrieval_recall@5", "spearman_wmean", "l2"} <= reported
    assert undeclared(reported, registry) == []
    assert find_metric("recall@1000", registry).name == "recall@{k}"
    assert higher_is_better("acc1", registry) is True
    assert higher_is_better("l2", registry) is None
    assert higher_is_better("no_such_metric", registry) is None
    # Whoever declares them: every outcome kind named is one.
    for metric in [*HOST_METRICS, *(p.item for p in registry.metrics.values())]:
        assert metric.description and set(metric.outcome_kinds) <= set(KINDS), metric


def test_a_pattern_stands_for_letters_digits_and_underscores():
    metric = Metric("recall@{k}", "r")
    assert metric.is_pattern and metric.matches("recall@50") and metric.matches("recall@a_1")
    assert not metric.matches("recall@") and not metric.matches("my_recall@5")
    assert not metric.matches("recall@5/x")
    with pytest.raises(ValueError, match="interval ends"):
        Metric("low", "clashes with the leaderboard's TASK/low")
    with pytest.raises(ValueError, match="higher_is_better"):
        Metric("x", "x", higher_is_better="yes")


UNDECLARED = """
    from itra_bench import Metric, Task, TaskResult, hookimpl

    class Mystery(Task):
        name = "mystery"
        protocol = "mystery"
        main_score = "mystery_score"
        modalities = frozenset({"image"})

        def run(self, model, ctx):
            return TaskResult({"mystery_score": 0.25}, "mystery_score", 1)

    @hookimpl
    def itra_bench_tasks():
        return [Mystery()]
"""


def test_a_metric_no_plugin_declares_is_refused_as_its_plugins_bug(cli, tmp_path, monkeypatch):
    mod = _plugin(tmp_path, monkeypatch, "mystery_plugin", UNDECLARED)
    args = ("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--plugin", mod,
            "--tasks", "mystery", "--no-cache", "--no-progress")
    res = cli(*args, "--output", tmp_path / "out")
    assert res.code == 3, res
    message = " ".join(res.err.split())
    assert "plugin bug: task 'mystery' of plugin 'mystery_plugin'" in message, res
    assert "'mystery_score'" in message and "itra_bench_metrics()" in message, res
    assert not list((tmp_path / "out").rglob("*.json"))  # nothing written
    # Declared, the same task's result is written.
    declared = _plugin(tmp_path, monkeypatch, "declared_plugin", UNDECLARED + """
    @hookimpl
    def itra_bench_metrics():
        return [Metric("mystery_score", "a constant")]
    """)
    res = cli(*args[:6], declared, *args[7:], "--output", tmp_path / "out2")
    assert res.code == 0, res
    assert "25.00" in res.out


def test_metric_clashes_name_both_declarers(tmp_path, monkeypatch):
    body = """
        from itra_bench import Metric, hookimpl

        @hookimpl
        def itra_bench_metrics():
            return [Metric(NAME, "mine")]
    """
    for mod, name in (("metrics_a", "score@{k}"), ("metrics_b", "score@{k}"),
                      ("metrics_c", "acc1"), ("metrics_d", "score@{n}")):
        _plugin(tmp_path, monkeypatch, mod, f"NAME = {name!r}\n" + textwrap.dedent(body))
    with pytest.raises(PluginClashError, match="metric 'score@{k}' is provided by two "
                                               "plugins: 'metrics_a'.*'metrics_b'"):
        load_registry(["metrics_a", "metrics_b"])
    with pytest.raises(PluginClashError, match="metric 'acc1' is declared by two: itra-bench "
                                               "itself .* and plugin 'metrics_c'"):
        load_registry(["metrics_c"])
    # Two patterns that both name one reported metric: refused when it is looked up.
    registry = load_registry(["metrics_a", "metrics_d"])
    with pytest.raises(PluginClashError, match="'score@{k}' of plugin 'metrics_a'.*"
                                               "'score@{n}' of plugin 'metrics_d'"):
        find_metric("score@5", registry)


# -- old result files ---------------------------------------------------------------------

def test_old_result_files_are_read_in_todays_words():
    records = {r["task"]: r for _, r in iter_records(OLD) if "dim16" not in r["model"]["name"]}
    triplets = records["wikisections-test"]
    assert triplets["main_score"] == "acc1" and set(triplets["metrics"]) == {"acc1"}
    assert "text_pooler" in triplets["config"] and "pooler" not in triplets["config"]
    raw = json.loads(next(OLD.glob("pixel-*/wikisections-test/triplets.json")).read_text())
    assert raw["main_score"] == "accuracy" and "pooler" in raw["config"]  # the file's words
    # The samples file's array is named after the metric too.
    path = next(OLD.glob("pixel-*/wikisections-test/triplets.json"))
    outcomes = read_outcomes(path, triplets)
    assert sorted(outcomes.arrays) == ["acc1"]
    assert outcomes.value("acc1") == triplets["metrics"]["acc1"]


def test_renamed_metrics_are_renamed_per_protocol_only():
    old = {"protocol": "sts", "main_score": "accuracy", "metrics": {"accuracy": 0.5},
           "config": {"pooler": "cls", "seed": 0}}
    today = current_record(json.loads(json.dumps(old)))
    assert today["metrics"] == {"accuracy": 0.5}  # no STS metric was renamed
    assert today["config"] == {"text_pooler": "cls", "seed": 0}
    snli = current_record({"protocol": "snli_ve_zeroshot", "main_score": "accuracy",
                           "metrics": {"accuracy": 0.5, "accuracy_neutral": 0.4}})
    assert snli["main_score"] == "acc1"
    assert snli["metrics"] == {"acc1": 0.5, "recall_neutral": 0.4}


def test_an_old_triplet_result_compares_with_a_new_one(cli, tmp_path):
    # The same model's results, one as an older itra-bench wrote it (accuracy) and one in
    # today's words: compare reads both as acc1, outcomes included.
    folder = tmp_path / "results"
    shutil.copytree(OLD / "pixel-f5429ddd", folder / "pixel-f5429ddd")
    new = folder / "pixel2-0123abcd" / "wikisections-test"
    shutil.copytree(OLD / "pixel-f5429ddd" / "wikisections-test", new)
    record = json.loads((new / "triplets.json").read_text())
    from itra_bench.sample_outcomes import SampleOutcomes, samples_path, write_outcomes

    hits = read_outcomes(new / "triplets.json", record).arrays["acc1"]
    record["samples"] = write_outcomes(samples_path(new / "triplets.json"),
                                       SampleOutcomes("means", {"acc1": hits}))
    record.update(main_score="acc1", metrics={"acc1": record["main_score_value"]},
                  model={**record["model"], "name": "pixel2", "fingerprint": "0123abcd" * 2})
    (new / "triplets.json").write_text(json.dumps(record))
    res = cli("compare", folder, "--models", "pixel", "pixel2", "--format", "json")
    assert res.code == 0, res
    (row,) = [r for r in json.loads(res.out) if r["task"] == "wikisections-test"]
    assert row["main_score"] == "acc1" and row["difference"] == 0
    assert {"low", "high"} <= set(row) and not {"ci_low", "ci_high"} & set(row)


# -- task files ---------------------------------------------------------------------------

def test_a_task_file_names_its_type_with_task_type_and_protocol_still_works(tmp_path):
    new, old = tmp_path / "new.yaml", tmp_path / "old.yaml"
    new.write_text("name: pets\ntask_type: clustering\nroot: pets\n")
    old.write_text("name: pets\nprotocol: clustering\nroot: pets\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenamedWordWarning)
        task = load_task_file(new)  # no note
    assert (task.task_type, task.protocol) == ("clustering", "clustering")
    notes: list[str] = []
    with noted_renames(notes.append):
        for _ in range(2):
            assert load_task_file(old).task_type == "clustering"
    assert notes == [f"{old}: the key `protocol:` is deprecated; write `task_type:` (it means "
                     "the same)"]
    with pytest.warns(RenamedWordWarning, match="`protocol:` is deprecated"):
        load_task_file(old)
    old.write_text("name: pets\nprotocol: clustering\ntask_type: clustering\nroot: pets\n")
    with pytest.raises(UserError, match="give `task_type:` alone"):
        load_task_file(old)


@pytest.mark.parametrize("body", ["name: t\n{key}: nope\n", "name: t\n{key}: [1]\n",
                                  "name: t\n{key}: clustering\nrot: pets\n"])
def test_the_old_key_gets_the_messages_of_the_new_one(tmp_path, body):
    messages = []
    for key in ("task_type", "protocol"):
        path = tmp_path / f"{key}.yaml"
        path.write_text(body.format(key=key))
        with warnings.catch_warnings(), pytest.raises(UserError) as err:
            warnings.simplefilter("ignore", RenamedWordWarning)
            load_task_file(path)
        messages.append(str(err.value).replace(str(path), "FILE"))
    assert messages[0] == messages[1]
    assert "task_type" in messages[0] and "protocol" not in messages[0]


def test_a_plugins_factory_written_for_the_old_key_still_reads_task_files(tmp_path):
    from itra_bench.tasks.wds.plugin import wds_task
    from itra_bench.yaml_tasks import check_fields

    seen = []

    def old_factory(doc, path):  # as plugins wrote them before `task_type`
        seen.append(check_fields(doc, {"name": (str, True, None),
                                       "protocol": (str, True, None)}, path, "mine"))
        return wds_task({"name": "w", "task_type": "wds", "root": "r"}, path)

    for key in ("task_type", "protocol"):
        path = tmp_path / f"{key}.yaml"
        path.write_text(f"name: t\n{key}: mine\n")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RenamedWordWarning)
            assert load_task_file(path, {"mine": old_factory}).task_type == "mine"
    assert seen == [{"name": "t", "protocol": "mine"}] * 2
    # A factory called directly with an old mapping reads it too.
    with pytest.warns(RenamedWordWarning):
        assert wds_task({"name": "w", "protocol": "wds", "root": "r"},
                        tmp_path / "w.yaml").name == "w"


def test_an_elevater_card_with_the_old_key_loads(tmp_path):
    from itra_bench.vision_benchmark.cards import CARDS_DIR, load_card

    text = (CARDS_DIR / "cifar-10.yaml").read_text()
    assert "\ntask_type: elevater\n" in text
    old = tmp_path / "cifar-10.yaml"
    old.write_text(text.replace("\ntask_type: elevater\n", "\nprotocol: elevater\n"))
    with pytest.warns(RenamedWordWarning):
        card = load_card(old)
    assert card.task_type == "elevater" and card.name == "cifar-10"


def test_no_shipped_card_uses_the_old_key():
    root = Path(__file__).parents[1]
    cards = [*root.glob("tasks/*/cards/*.yaml"), *root.glob("vision_benchmark/cards/*.yaml"),
             *root.glob("examples/*/*/cards/*.yaml")]
    assert len(cards) >= 40
    assert [c for c in cards if "\nprotocol:" in "\n" + c.read_text()] == []


# -- the text pooler ----------------------------------------------------------------------

def test_the_text_pooler_keeps_its_old_names(tmp_path):
    from itra_bench.evaluation import _run_fields
    from itra_bench.model_api import ModelOptions

    with pytest.warns(DeprecationWarning, match="text_pooler"):
        old = ModelOptions(pooler="cls")
    assert old == ModelOptions(text_pooler="cls") and old.pooler == "cls"
    with pytest.warns(DeprecationWarning, match="text_pooler"):
        fields, _ = _run_fields({"pooler": "mean"})
    assert fields["text_pooler"] == "mean" and "pooler" not in fields
    with pytest.raises(UserError, match="text_pooler alone"):
        _run_fields({"pooler": "mean", "text_pooler": "cls"})
    with pytest.raises(UserError, match="text_pooler must be 'cls', 'mean' or None"):
        _run_fields({"text_pooler": "max"})


# -- the docs -----------------------------------------------------------------------------

def test_the_readme_vocabulary_table_is_the_codes():
    """The docs' Vocabulary page (once the README's section) shows the code's table."""
    section = doc_pages.section(doc_pages.page("results/vocabulary.md"), "Vocabulary")
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]
    assert rows == [w.markdown_row() for w in VOCABULARY]


def test_plugin_metrics_are_listed_with_the_host_ones(tmp_path, monkeypatch):
    _plugin(tmp_path, monkeypatch, "listed_metrics", """
        from itra_bench import Metric, hookimpl

        @hookimpl
        def itra_bench_metrics():
            return [Metric("errors", "mistakes made", higher_is_better=False)]
    """)
    registry = load_registry(["listed_metrics"])
    assert higher_is_better("errors", registry) is False
    assert np.all([higher_is_better(m.name, registry) is not None for m in HOST_METRICS
                   if m.name != "l2"])


# -- the command line's notes and listing -------------------------------------------------

def test_the_command_line_notes_old_words_once_and_lists_metrics(cli, tmp_path):
    data = tmp_path / "data"
    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = data / "pets" / split / label
            folder.mkdir(parents=True)
            from PIL import Image

            for i in range(2):
                Image.new("RGB", (8, 8), (200 * (label == "a"), 50 * i, 0)).save(
                    folder / f"{i}.png")
    old = tmp_path / "old.yaml"
    old.write_text("name: pets-clusters\nprotocol: clustering\nroot: pets\n")
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--pooler", "mean",
              "--tasks", old, "--data-root", data, "--output", tmp_path / "out",
              "--cache-dir", tmp_path / "cache", "--workers", "0", "--no-progress")
    assert res.code == 0, res
    notes = [line for line in res.err.splitlines() if line.startswith("note: ")]
    assert notes == ["note: --pooler is deprecated; use --text-pooler (it means the same)",
                     f"note: {old}: the key `protocol:` is deprecated; write `task_type:` (it "
                     "means the same)"], res.err
    (_, record), = iter_records(tmp_path / "out")
    assert record["config"]["text_pooler"] == "mean" and "pooler" not in record["config"]

    listed = cli("list", "metrics", "--format", "json")
    assert listed.code == 0, listed
    rows = {row["metric"]: row for row in json.loads(listed.out)}
    assert rows["acc1"]["better"] == "higher"
    assert "itra-bench itself" in rows["acc1"]["declared_by"]
    assert "elevater_tasks" in rows["11point_mAP"]["declared_by"]
    assert "accuracy" not in rows
