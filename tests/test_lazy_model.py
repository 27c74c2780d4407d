"""A run whose features are all cached builds no model; any change to what decided the model
brings the build back (the memo never serves another model's fingerprint)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from itra_bench.results import iter_records

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TASKS = "digits-zeroshot,digits-retrieval,digits-knn"


@pytest.fixture
def weights(tmp_path: Path) -> tuple[Path, Path]:
    import open_clip

    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    torch.manual_seed(0)
    torch.save(open_clip.CLIP(**TINY).state_dict(), tmp_path / "w.pt")
    return tmp_path / "tiny.json", tmp_path / "w.pt"


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Counts OpenCLIP model constructions."""
    from itra_bench.plugins import openclip_models

    seen: list[str] = []
    create = openclip_models._ArchSource.create

    def counting(self, *args, **kwargs):
        seen.append(self.label)
        return create(self, *args, **kwargs)

    monkeypatch.setattr(openclip_models._ArchSource, "create", counting)
    return seen


def _run(cli, tmp_path: Path, spec: str, *extra: str, out: str = "out"):
    res = cli("run", "--model", spec, "--tasks", TASKS, "--output", tmp_path / out,
              "--cache-dir", tmp_path / "cache", "--workers", "0", "--no-progress", *extra)
    assert res.code == 0, res
    return res


def _metrics(out: Path) -> dict[str, dict]:
    return {r["task"]: (r["model"]["fingerprint"], r["metrics"], r["details"].get("num_params"))
            for _, r in iter_records(out)}


def test_a_cached_run_builds_no_model_and_gives_the_same_numbers(cli, tmp_path, weights,
                                                                  builds):
    spec = f"openclip:{weights[0]}@{weights[1]}"
    _run(cli, tmp_path, spec)
    assert len(builds) == 1
    res = _run(cli, tmp_path, spec, "--overwrite", out="out2")
    assert builds == [builds[0]]  # still one: every feature came from the cache
    assert "building" not in res.err
    assert _metrics(tmp_path / "out") == _metrics(tmp_path / "out2")


def test_a_missing_feature_builds_the_model_once(cli, tmp_path, weights, builds):
    spec = f"openclip:{weights[0]}@{weights[1]}"
    _run(cli, tmp_path, spec)
    for entry in (tmp_path / "cache").rglob("*.pt"):
        entry.unlink()
    res = _run(cli, tmp_path, spec, "--overwrite", out="out2")
    assert len(builds) == 2
    assert res.err.count("(a feature is not in the cache)") == 1
    assert _metrics(tmp_path / "out") == _metrics(tmp_path / "out2")


def test_changed_weights_are_built_again_under_their_own_fingerprint(cli, tmp_path, weights,
                                                                     builds):
    import open_clip

    spec = f"openclip:{weights[0]}@{weights[1]}"
    _run(cli, tmp_path, spec)
    first = _metrics(tmp_path / "out")
    torch.manual_seed(1)
    torch.save(open_clip.CLIP(**TINY).state_dict(), weights[1])
    _run(cli, tmp_path, spec, out="out2")
    assert len(builds) == 2
    second = _metrics(tmp_path / "out2")
    assert {fp for fp, *_ in first.values()}.isdisjoint({fp for fp, *_ in second.values()})


def test_an_edited_config_or_a_touched_file_is_built_again(cli, tmp_path, weights, builds):
    spec = f"openclip:{weights[0]}@{weights[1]}"
    _run(cli, tmp_path, spec)
    os.utime(weights[1], ns=(1, 1))  # same bytes, another time: the memo cannot tell
    _run(cli, tmp_path, spec, "--overwrite", out="out2")
    assert len(builds) == 2
    # Other preprocessing: the same weights fit, the features differ.
    weights[0].write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    _run(cli, tmp_path, spec, out="out3")
    assert len(builds) == 3
    fp = {fp for fp, *_ in _metrics(tmp_path / "out3").values()}
    assert fp.isdisjoint({fp for fp, *_ in _metrics(tmp_path / "out").values()})


def test_a_stale_memo_is_refused_not_used(cli, tmp_path, weights, builds):
    spec = f"openclip:{weights[0]}@{weights[1]}"
    _run(cli, tmp_path, spec)
    (memo,) = (tmp_path / "cache" / "models").glob("*.json")
    doc = json.loads(memo.read_text())
    doc["fingerprint"] = "0" * 16  # what a memo that missed a change would say
    memo.write_text(json.dumps(doc))
    res = cli("run", "--model", spec, "--tasks", TASKS, "--output", tmp_path / "out2",
              "--cache-dir", tmp_path / "cache", "--workers", "0", "--no-progress")
    assert res.code == 2
    assert "not the 0000000000000000 remembered from its last build" in res.err
    assert json.loads(memo.read_text())["fingerprint"] != "0" * 16  # refreshed for next time


def test_parameter_counts_and_transform_come_from_the_memo_unchanged(tmp_path, weights):
    from itra_bench.lazy_model import LazyModel
    from itra_bench.model_building import build_model
    from itra_bench.model_memo import ModelMemo, memo_key, watched_paths
    from itra_bench.registry import load_registry
    from itra_bench.runner import RunConfig

    registry = load_registry([], [])
    config = RunConfig(model=f"openclip:{weights[0]}@{weights[1]}", tasks=["demo"])
    memo = ModelMemo(tmp_path / "memo")
    real = build_model(config, registry, memo)
    lazy = build_model(config, registry, memo)
    assert isinstance(lazy, LazyModel) and not lazy.is_built
    assert (lazy.fingerprint, lazy.modalities, lazy.dynamic_text_length) == \
        (real.fingerprint, real.modalities, real.dynamic_text_length)
    assert lazy.image_transform_id() == real.image_transform_id()
    assert lazy.parameter_count() == real.parameter_count() > 0
    assert lazy.parameter_count(visual=True) == real.parameter_count(visual=True) > 0
    assert not lazy.is_built
    with torch.inference_mode():
        assert torch.equal(lazy.to("cpu").eval().encode_text(["a cat"]),
                           real.encode_text(["a cat"]))
    assert lazy.is_built
    assert sum(p.numel() for p in lazy.parameters()) == real.parameter_count()
    # The memo watches the files the spec names and the builder's own source.
    from itra_bench.model_api import ModelOptions
    from itra_bench.plugins.openclip_models import build_openclip

    watched = watched_paths(config.model, ModelOptions(), build_openclip)
    assert {str(weights[0]), str(weights[1]),
            os.path.abspath(build_openclip.__code__.co_filename)} <= set(watched)
    # The registered builder is a LazyFactory: its module's folder is watched all the same.
    registered = registry.models["openclip"].item.build
    assert set(watched_paths(config.model, ModelOptions(), registered)) == set(watched)
    assert memo_key("a", ModelOptions(), None, build_openclip) != \
        memo_key("a", ModelOptions(seed=1), None, build_openclip)


def test_without_a_cache_the_model_is_always_built(cli, tmp_path, weights, builds):
    spec = f"openclip:{weights[0]}@{weights[1]}"
    for out in ("out", "out2"):
        res = cli("run", "--model", spec, "--tasks", "digits-knn", "--output", tmp_path / out,
                  "--no-cache", "--workers", "0", "--no-progress")
        assert res.code == 0, res
    assert len(builds) == 2


def test_a_relative_spec_in_another_folder_is_another_model(tmp_path, monkeypatch):
    import open_clip

    from itra_bench.lazy_model import LazyModel
    from itra_bench.model_building import build_model
    from itra_bench.model_memo import ModelMemo
    from itra_bench.registry import load_registry
    from itra_bench.runner import RunConfig

    for seed, name in ((0, "a"), (1, "b")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "tiny.json").write_text(json.dumps(TINY))
        torch.manual_seed(seed)
        torch.save(open_clip.CLIP(**TINY).state_dict(), folder / "w.pt")
    registry = load_registry([], [])
    config = RunConfig(model="openclip:tiny.json@w.pt", tasks=["demo"])
    memo = ModelMemo(tmp_path / "memo")
    monkeypatch.chdir(tmp_path / "a")
    first = build_model(config, registry, memo)
    assert isinstance(build_model(config, registry, memo), LazyModel)
    monkeypatch.chdir(tmp_path / "b")
    other = build_model(config, registry, memo)
    assert not isinstance(other, LazyModel) and other.fingerprint != first.fingerprint


def test_a_builder_led_elsewhere_by_the_environment_is_built_again(tmp_path, monkeypatch):
    """The demo finds its weights through $ITRA_BENCH_DEMO_DIR, hub models through HF_HOME
    or TORCH_HOME: a memo made under one value must not serve another (a stale fingerprint
    would serve the other model's cached features)."""
    from itra_bench.fingerprint import fingerprint
    from itra_bench.lazy_model import LazyModel
    from itra_bench.model import EncoderModel
    from itra_bench.model_api import ModelBuilder
    from itra_bench.model_building import build_model
    from itra_bench.model_memo import ModelMemo
    from itra_bench.plugin_tables import Provided
    from itra_bench.registry import PluginInfo, load_registry
    from itra_bench.runner import RunConfig

    def build(rest, options):
        weights = Path(os.environ["ITRA_BENCH_TEST_WEIGHTS"])  # not named by the spec
        model = EncoderModel()
        model.modalities = frozenset({"text"})
        model.fingerprint = fingerprint({"builder": "env"}, [weights])
        return model

    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode())
    registry = load_registry([], [])
    registry.models["envmodel"] = Provided("envmodel", ModelBuilder("envmodel", build, lazy=True),
                                           PluginInfo("test", "test", __name__, "1"))
    config = RunConfig(model="envmodel", tasks=["demo"])
    memo = ModelMemo(tmp_path / "memo")
    monkeypatch.setenv("ITRA_BENCH_TEST_WEIGHTS", str(tmp_path / "a"))
    first = build_model(config, registry, memo)
    assert isinstance(build_model(config, registry, memo), LazyModel)
    monkeypatch.setenv("ITRA_BENCH_TEST_WEIGHTS", str(tmp_path / "b"))
    other = build_model(config, registry, memo)
    assert not isinstance(other, LazyModel) and other.fingerprint != first.fingerprint
