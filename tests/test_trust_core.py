"""Regression tests for paths that used to exit 0 with a wrong number (issue: numbers you can
trust): identity of models and data, one class list per task, suite averages per variant
family, results that know the data they saw, hook validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from itra_bench.results import iter_records

PIXEL = ("--plugin", "itra_test_plugin")
FP = ("--plugin", "itra_fp_plugin")


def run_args(tmp_path: Path, *extra: str, model: str = "pixel", out: str = "out") -> list:
    return ["run", "--model", model, *PIXEL, *FP, "--output", tmp_path / out,
            "--cache-dir", tmp_path / "cache", "--workers", "0", "--no-progress", *extra]


# --- 1. identity of models and data sources ----------------------------------------------

def test_model_without_fingerprint_is_refused_naming_the_plugin(cli, tmp_path):
    # Two models of one family that differ only in a parameter: with an empty fingerprint the
    # second was served the first one's cached features.
    first = cli(*run_args(tmp_path, "--tasks", "fp-named-source", model="nofp:1"))
    assert first.code == 2, first
    assert "fingerprint" in first.err and "itra_fp_plugin" in first.err
    assert "Traceback" not in first.err


def test_image_source_without_identity_is_refused(cli, tmp_path):
    res = cli(*run_args(tmp_path, "--tasks", "fp-anonymous-source"))
    assert res.code == 2, res
    assert "identity" in res.err and "fp-anonymous-source" in res.err


def test_fingerprint_covers_provider_version_and_pooler():
    from itra_test_plugin import PixelModel

    from itra_bench.model_building import effective_fingerprint
    from itra_bench.registry import PluginInfo

    model = PixelModel()
    a = PluginInfo("p", "dist-a", "mod", "1.0")
    base = effective_fingerprint(model, a, pooler=None)
    assert base and base != model.fingerprint
    assert effective_fingerprint(model, PluginInfo("p", "dist-a", "mod", "1.1"), None) != base
    assert effective_fingerprint(model, PluginInfo("q", "dist-a", "mod", "1.0"), None) != base
    assert effective_fingerprint(model, a, pooler="mean") != base
    assert effective_fingerprint(model, a, pooler=None) == base


def test_plugin_distribution_is_recorded_in_each_result(cli, tmp_path):
    assert cli(*run_args(tmp_path, "--tasks", "digits-knn")).code == 0
    (_, record), = iter_records(tmp_path / "out")
    providers = record["providers"]
    assert providers["model"]["plugin"] == "itra_test_plugin"
    assert providers["task"]["plugin"] == "demo_tasks"
    assert providers["task"]["distribution"] == "itra-bench"
    assert providers["task"]["version"]


# --- 2. one class list per task ------------------------------------------------------------

def make_tree(root: Path, splits: dict[str, tuple[str, ...]], n: int = 5) -> Path:
    palette = {"cat": (250, 10, 10), "dog": (10, 250, 10), "emu": (10, 10, 250)}
    for split, classes in splits.items():
        for cls in classes:
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                r, g, b = palette[cls]
                Image.new("RGB", (16, 16), (r, g + 3 * i, b)).save(d / f"{i}.png")
    return root


def test_class_missing_from_train_split_is_an_error_naming_the_folder(cli, tmp_path):
    # Each split used to read its own class list: with `cat` absent from train/, dog and emu
    # shifted to indices 0 and 1 there, and k-NN scored far below its true ~100 %.
    make_tree(tmp_path / "data" / "pets", {"train": ("dog", "emu"),
                                            "test": ("cat", "dog", "emu")})
    task = tmp_path / "knn.yaml"
    task.write_text("name: pets-knn\nprotocol: knn\nroot: pets\nk: 1\n")
    res = cli(*run_args(tmp_path, "--tasks", task, "--data-root", tmp_path / "data"))
    assert res.code == 2, res
    assert "cat" in res.err and "train" in res.err


def test_splits_share_one_class_list(cli, tmp_path):
    # The eval split lacks `cat`: allowed, but its labels must use the task's indices.
    make_tree(tmp_path / "data" / "pets", {"train": ("cat", "dog", "emu"),
                                            "test": ("dog", "emu")})
    task = tmp_path / "knn.yaml"
    task.write_text("name: pets-knn\nprotocol: knn\nroot: pets\nk: 1\n")
    res = cli(*run_args(tmp_path, "--tasks", task, "--data-root", tmp_path / "data"))
    assert res.code == 0, res
    (_, record), = iter_records(tmp_path / "out")
    assert record["metrics"]["acc1"] == 1.0


def test_classnames_shorter_than_class_folders_is_refused_before_encoding(cli, tmp_path):
    from itra_test_plugin import PixelModel

    make_tree(tmp_path / "data" / "pets", {"test": ("cat", "dog", "emu")})
    task = tmp_path / "zs.yaml"
    task.write_text("name: pets-zs\nprotocol: zeroshot\nroot: pets\nclassnames: [cat, dog]\n")
    PixelModel.images_encoded = 0
    res = cli(*run_args(tmp_path, "--tasks", task, "--data-root", tmp_path / "data"))
    assert res.code == 2, res
    assert str(task) in res.err and "classnames" in res.err and "3" in res.err
    assert PixelModel.images_encoded == 0


# --- 3. suite averages per variant family ---------------------------------------------------

def _record(out: Path, task: str, variant: str, value: float, suites, family=None) -> None:
    from itra_bench.results import ResultStore

    store = ResultStore(out)
    rec = {"model": {"name": "m", "fingerprint": "f" * 16, "modalities": ["image"]},
           "task": task, "variant": variant, "protocol": "elevater", "suites": suites,
           "main_score": "acc1", "main_score_value": value, "metrics": {"acc1": value},
           "num_samples": 10, "details": {}, "config": {}}
    if family is not None:
        rec["variant_family"] = family
    store.write(store.path("m", "f" * 16, task, variant), rec)


def test_suite_average_never_mixes_variant_families(tmp_path):
    from itra_bench.leaderboard import collate

    out = tmp_path / "res"
    for task, zs, lp in (("a", 0.2, 0.6), ("b", 0.4, 0.8)):
        _record(out, task, "zeroshot", zs, ["s"])
        _record(out, task, "linear_probe-full-seed0", lp, ["s"])
    _record(out, "a", "linear_probe-5shot-seed0", 0.5, ["s"])  # b has no 5-shot: incomplete
    _record(out, "a", "linear_probe-5shot-seed1", 0.3, ["s"])
    board = collate(out)
    assert board.suite_avg[("m", "s/zeroshot")] == pytest.approx(0.3)
    assert board.suite_avg[("m", "s/linear_probe-full")] == pytest.approx(0.7)
    assert ("m", "s/linear_probe-5shot") not in board.suite_avg
    assert ("m", "s") not in board.suite_avg
    assert "avg:s/zeroshot" in board.to_csv().splitlines()[0]


def test_suite_of_single_variant_tasks_keeps_one_average(tmp_path):
    from itra_bench.leaderboard import collate

    out = tmp_path / "res"
    _record(out, "x", "default", 0.2, ["t"])
    _record(out, "y", "default", 0.6, ["t"])
    board = collate(out)
    assert board.suite_avg == {("m", "t"): pytest.approx(0.4)}


def test_seeds_of_a_family_are_averaged_per_task_first(tmp_path):
    from itra_bench.leaderboard import collate

    out = tmp_path / "res"
    _record(out, "a", "linear_probe-5shot-seed0", 0.2, ["s"])
    _record(out, "a", "linear_probe-5shot-seed1", 0.4, ["s"])
    _record(out, "b", "linear_probe-5shot-seed0", 0.9, ["s"])
    board = collate(out)
    assert board.suite_avg[("m", "s/linear_probe-5shot")] == pytest.approx((0.3 + 0.9) / 2)


# --- 5. results know the data they saw -----------------------------------------------------

def test_rerun_on_changed_data_recomputes_instead_of_exists(cli, tmp_path):
    root = make_tree(tmp_path / "data" / "pets", {"test": ("cat", "dog")})
    bad = root / "test" / "cat" / "0.png"
    bad.write_bytes(b"not a png")
    task = tmp_path / "cl.yaml"
    task.write_text("name: pets-cl\nprotocol: clustering\nroot: pets\n")
    args = run_args(tmp_path, "--tasks", task, "--data-root", tmp_path / "data")
    res = cli(*args, "--skip-corrupt")
    assert res.code == 0, res
    (path, record), = iter_records(tmp_path / "out")
    assert record["num_samples"] == 9
    assert record["data"]["complete"] is False and record["data"]["skipped"] == 1
    assert record["data"]["identity"]
    # Unchanged data: the stored result stands.
    again = cli(*args, "--skip-corrupt")
    assert again.code == 0 and "exists" in again.out
    # The corrupt file is fixed: the data changed, so the result is recomputed.
    Image.new("RGB", (16, 16), (250, 10, 10)).save(bad, format="PNG")
    fixed = cli(*args, "--skip-corrupt")
    assert fixed.code == 0, fixed
    assert "exists" not in fixed.out
    (_, record), = iter_records(tmp_path / "out")
    assert record["num_samples"] == 10 and record["data"]["complete"] is True


# --- 8. misspelled hooks ----------------------------------------------------------------------

def test_misspelled_hook_is_an_error_naming_plugin_and_hook(cli, tmp_path, monkeypatch):
    mod = tmp_path / "typo_plugin.py"
    mod.write_text("from itra_bench import hookimpl\n\n@hookimpl\n"
                   "def itra_bench_model_builder():\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    res = cli("list", "models", "--plugin", "typo_plugin")
    assert res.code == 2, res
    assert "typo_plugin" in res.err and "itra_bench_model_builder" in res.err
    assert "itra_bench_model_builders" in res.err  # the close match


# --- plugin bugs are not user errors ------------------------------------------------------------

def test_task_returning_wrong_type_is_reported_as_plugin_bug(cli, tmp_path, monkeypatch):
    mod = tmp_path / "buggy_plugin.py"
    mod.write_text(
        "from itra_bench import hookimpl\nfrom itra_bench.task import Task\n\n"
        "class Bad(Task):\n    name = 'buggy-task'\n    protocol = 'x'\n"
        "    main_score = 'm'\n    modalities = frozenset({'image'})\n"
        "    def run(self, model, ctx):\n        return {'m': 1.0}\n\n"
        "class Crash(Bad):\n    name = 'crashing-task'\n"
        "    def run(self, model, ctx):\n        raise KeyError('oops')\n\n"
        "@hookimpl\ndef itra_bench_tasks():\n    return [Bad(), Crash()]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for task, what in (("buggy-task", "TaskResult"), ("crashing-task", "KeyError")):
        res = cli(*run_args(tmp_path, "--tasks", task, "--plugin", "buggy_plugin"))
        assert res.code == 3, res
        assert "plugin bug" in res.err and "buggy_plugin" in res.err and what in res.err
        assert "Traceback" not in res.err
        debug = cli(*run_args(tmp_path, "--tasks", task, "--plugin", "buggy_plugin", "--debug"))
        assert debug.code == 3 and "Traceback" in debug.err


# --- bad result files, unwritable folders -------------------------------------------------------

@pytest.mark.parametrize("garbage", ["", "{}", "[]", "{not json", "\x00\xff"])
def test_garbage_result_file_is_named_kept_and_recomputed(cli, tmp_path, garbage):
    assert cli(*run_args(tmp_path, "--tasks", "digits-knn")).code == 0
    (path, _), = iter_records(tmp_path / "out")
    path.write_text(garbage, encoding="latin-1")
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn"))
    assert res.code == 0, res
    assert path.name in res.err and "corrupt" in res.err
    assert path.with_name(path.name + ".corrupt").exists()
    assert json.loads(path.read_text())["main_score"] == "acc1"


def test_results_command_warns_about_unreadable_files(cli, tmp_path):
    assert cli(*run_args(tmp_path, "--tasks", "digits-knn,digits-clustering")).code == 0
    paths = [p for p, _ in iter_records(tmp_path / "out")]
    paths[0].write_text("{broken")
    res = cli("results", tmp_path / "out")
    assert res.code == 0, res
    assert paths[0].name in res.err and "unreadable" in res.err


def test_read_only_output_folder_is_refused_before_any_compute(cli, tmp_path):
    import os

    from itra_test_plugin import PixelModel

    if os.geteuid() == 0:
        # root ignores permission bits: a file where the folder should be is unwritable for all.
        (tmp_path / "out").write_text("a file, not a folder")
    else:
        (tmp_path / "out").mkdir()
        (tmp_path / "out").chmod(0o500)
    PixelModel.images_encoded = 0
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn"))
    assert res.code == 2, res
    assert "out" in res.err and "--output" in res.err
    assert PixelModel.images_encoded == 0


def test_unwritable_cache_folder_is_refused_before_any_compute(cli, tmp_path):
    (tmp_path / "cache").write_text("a file, not a folder")
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn"))
    assert res.code == 2, res
    assert "cache" in res.err and "--cache-dir" in res.err


def test_list_kind_typo_is_one_message(cli):
    res = cli("list", "losss")
    assert res.code == 2
    assert "losses" in res.err and "Traceback" not in res.err


@pytest.mark.parametrize("target", ["result", "cache"])
def test_write_failing_mid_run_names_the_folder_and_keeps_earlier_results(
        cli, tmp_path, monkeypatch, target):
    import errno

    import itra_bench.feature_cache as feature_cache
    import itra_bench.results as results

    assert cli(*run_args(tmp_path, "--tasks", "digits-knn", "--no-cache")).code == 0
    (kept, _), = iter_records(tmp_path / "out")
    before = kept.read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    module = results if target == "result" else feature_cache
    monkeypatch.setattr(module, "atomic_write_json", full)
    monkeypatch.setattr(feature_cache, "atomic_torch_save", full)
    extra = ("--no-cache",) if target == "result" else ()
    res = cli(*run_args(tmp_path, "--tasks", "digits-clustering", *extra))
    assert res.code == 2, res
    assert "No space left on device" in res.err and "Traceback" not in res.err
    assert ("--output" if target == "result" else "--cache-dir") in res.err
    assert kept.read_text() == before


def test_msmarco_subset_runs_are_their_own_family():
    from itra_bench.registry import load_registry
    from itra_bench.task import variant_family

    task = load_registry().tasks["msmarco-passage-dev"].item
    full, = task.variants({})
    subset, = task.variants({"max_passages": 1000})
    assert variant_family(full.name, task.protocol, full.family) == ""
    assert variant_family(subset.name, task.protocol, subset.family) == subset.name != ""


def test_old_elevater_metric_names_read_as_todays(tmp_path):
    from itra_bench.atomic_io import atomic_write_json
    from itra_bench.leaderboard import collate
    from itra_bench.results import SCHEMA, ResultStore

    store = ResultStore(tmp_path)
    rec = {"schema": SCHEMA,
           "model": {"name": "m", "fingerprint": "f" * 16, "modalities": ["image"]},
           "task": "dtd", "variant": "zeroshot", "protocol": "elevater", "suites": [],
           "main_score": "accuracy", "main_score_value": 0.5,
           "metrics": {"accuracy": 0.5, "mean_per_class": 0.4}, "num_samples": 3,
           "details": {}, "config": {}}
    # As an older itra-bench wrote it: today's store refuses the old names on writing.
    atomic_write_json(store.path("m", "f" * 16, "dtd", "zeroshot"), rec)
    board = collate(tmp_path)
    assert board.metrics[("m", "dtd[zeroshot]")] == {"acc1": 0.5,
                                                     "mean_per_class_recall_present": 0.4}


def test_precision_has_one_vocabulary_with_the_old_spelling_accepted(cli, tmp_path, capsys):
    from itra_bench.context import PRECISIONS as RUN_PRECISIONS
    from itra_train.config import PRECISIONS as TRAIN_PRECISIONS

    assert RUN_PRECISIONS == TRAIN_PRECISIONS == ("fp32", "amp_bf16", "amp_fp16")
    # `amp` (itra-train's old name) is read as amp_fp16, which needs CUDA.
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn", "--precision", "amp",
                        "--device", "cpu"))
    assert res.code == 2 and "amp_fp16 needs a CUDA device" in res.err
    bad = cli(*run_args(tmp_path, "--tasks", "digits-knn", "--precision", "fp64"))
    assert bad.code == 2 and "amp_bf16" in bad.err


def test_user_error_of_any_kind_from_a_task_keeps_its_message_and_gets_the_task_name(
        cli, tmp_path, monkeypatch):
    mod = tmp_path / "raising_plugin.py"
    mod.write_text(
        "from itra_bench import hookimpl\nfrom itra_bench.errors import UnknownNameError\n"
        "from itra_bench.task import Task\n\n"
        "class Raises(Task):\n    name = 'raising-task'\n    protocol = 'x'\n"
        "    main_score = 'm'\n    modalities = frozenset({'image'})\n"
        "    def run(self, model, ctx):\n"
        "        raise UnknownNameError('template', 'phto', ['photo'])\n\n"
        "@hookimpl\ndef itra_bench_tasks():\n    return [Raises()]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    res = cli(*run_args(tmp_path, "--tasks", "raising-task", "--plugin", "raising_plugin"))
    assert res.code == 2, res
    assert "task 'raising-task'" in res.err and "unknown template 'phto'" in res.err


def test_rerun_after_editing_the_task_file_recomputes(cli, tmp_path):
    make_tree(tmp_path / "data" / "pets", {"test": ("cat", "dog")})
    task = tmp_path / "zs.yaml"
    task.write_text("name: pets-zs\nprotocol: zeroshot\nroot: pets\n"
                    "templates: ['a photo of a {}.']\n")
    args = run_args(tmp_path, "--tasks", task, "--data-root", tmp_path / "data")
    assert cli(*args).code == 0
    assert "exists" in cli(*args).out
    task.write_text("name: pets-zs\nprotocol: zeroshot\nroot: pets\n"
                    "templates: ['a drawing of a {}.']\n")
    res = cli(*args)
    assert res.code == 0, res
    assert "exists" not in res.out and "definition changed" in res.err


def test_task_definition_is_stable_across_processes():
    import subprocess
    import sys

    code = ("from itra_bench.registry import load_registry\n"
            "from itra_bench.task_identity import task_definition\n"
            "r = load_registry()\n"
            "print(sorted((n, task_definition(p.item)) for n, p in r.tasks.items()))\n")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)}
    assert len(outs) == 1 and "digits-knn" in outs.pop()


def test_a_suite_run_in_part_gets_no_suite_average(cli, tmp_path):
    # Two of the five demo tasks: `avg:demo` over them would pose as the suite's average.
    assert cli(*run_args(tmp_path, "--tasks", "digits-zeroshot", "digits-knn")).code == 0
    (_, record), *_ = iter_records(tmp_path / "out")
    assert record["suite_members"]["demo"] == ["digits-clustering", "digits-knn",
                                               "digits-linear-probe", "digits-retrieval",
                                               "digits-zeroshot"]
    res = cli("results", tmp_path / "out", "--format", "json")
    assert res.code == 0, res
    (row,) = json.loads(res.out)
    assert "avg:demo" not in row and "digits-knn" in row
    # Results written before members were recorded: the suites of the installed plugins say.
    from itra_bench.leaderboard import collate

    for path, rec in iter_records(tmp_path / "out"):
        del rec["suite_members"]
        path.write_text(json.dumps(rec))
    assert collate(tmp_path / "out").suite_columns == ["demo"]  # (seen tasks only: complete)
    board = collate(tmp_path / "out", suite_members={"demo": record["suite_members"]["demo"]})
    assert board.suite_avg == {}
