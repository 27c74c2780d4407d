"""The third-party plugin example (examples/itra-bench-example-plugin): its parts behave as
documented, and once pip-installed it is found through the ``itra_bench`` entry point alone.

The install goes into a temporary ``--target`` folder put on PYTHONPATH of CLI subprocesses,
so the test environment's site-packages is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "itra-bench-example-plugin"
DIST = "itra-bench-example-plugin"


@pytest.fixture
def example_pkg(monkeypatch: pytest.MonkeyPatch):
    """The example package imported from its source folder (no install)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import itra_bench_example_plugin

    return itra_bench_example_plugin


# --- the parts, in process -------------------------------------------------------------------


def test_colorhist_embeds_per_channel_histograms(example_pkg) -> None:
    from itra_bench_example_plugin.colorhist import ColorHistogram, build

    from itra_bench.model import IMAGE, ModelOptions

    model = build("", ModelOptions())  # weight-free: no --random-init needed
    assert model.modalities == frozenset({IMAGE})
    assert model.fingerprint == build("", ModelOptions()).fingerprint  # stable
    assert model.fingerprint != build("16", ModelOptions()).fingerprint  # config changes it

    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 10, 12, generator=g)
    images[0, 1] = 1.0  # the top edge of the range belongs to the top bin
    out = model.encode_image(images)
    assert out.shape == (4, 3 * 8)
    for b in range(4):
        for c in range(3):
            expected = torch.histc(images[b, c], bins=8, min=0.0, max=1.0) / images[b, c].numel()
            torch.testing.assert_close(out[b, c * 8:(c + 1) * 8], expected)

    from PIL import Image

    pixel = model.image_transform(Image.new("RGB", (30, 20), (255, 0, 128)))
    assert isinstance(pixel, torch.Tensor) and pixel.shape == (3, 64, 64)
    hist = model.encode_image(pixel[None]).reshape(3, 8)
    assert hist[0, 7] == 1 and hist[1, 0] == 1 and hist[2, 4] == 1  # 128/255 -> bin 4

    assert isinstance(model, ColorHistogram)


def test_colorhist_bad_spec_is_a_user_error(example_pkg) -> None:
    from itra_bench_example_plugin.colorhist import build

    from itra_bench.errors import UserError
    from itra_bench.model import ModelOptions

    with pytest.raises(UserError, match="colorhist:many"):
        build("many", ModelOptions())


def test_example_cosine_loss_is_mean_one_minus_cosine(example_pkg) -> None:
    from itra_bench_example_plugin.losses import PairedCosineLoss

    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    loss = PairedCosineLoss()(img, txt, torch.tensor(100.0))
    manual = sum(1 - float(img[i] @ txt[i] / (img[i].norm() * txt[i].norm()))
                 for i in range(5)) / 5
    assert loss.ndim == 0
    assert float(loss) == pytest.approx(manual, rel=1e-5)
    assert float(PairedCosineLoss()(img, 3 * img, torch.tensor(1.0))) == pytest.approx(0, abs=1e-6)
    assert float(PairedCosineLoss()(img, -img, torch.tensor(1.0))) == pytest.approx(2, abs=1e-6)
    # Differentiable, as a training objective must be.
    img.requires_grad_(True)
    PairedCosineLoss()(img, txt, torch.tensor(1.0)).backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()
    assert img.grad.abs().sum() > 0


# --- installed with pip, driven through the CLI ----------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example pip-installed (no deps, no build isolation) into a private target folder."""
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = tmp_path_factory.mktemp("example-src") / "itra-bench-example-plugin"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("example-target")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--quiet", "--target", str(target),
         str(src)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(target.glob("itra_bench_example_plugin-*.dist-info/entry_points.txt"))
    return target


def _env(*pythonpath: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ITRA_BENCH_PLUGINS", None)
    inherited = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in pythonpath), *inherited])
    env["COLUMNS"] = "250"  # rich wraps and truncates table cells at the default 80
    return env


def _cli(args: list[str], *pythonpath: Path) -> subprocess.CompletedProcess[str]:
    """``itra-bench ARGS`` in a fresh interpreter that sees ``pythonpath``."""
    # cwd: not the checkout, whose folders `python -m` would put first on sys.path.
    return subprocess.run([sys.executable, "-m", "itra_bench.cli", *args], capture_output=True,
                          text=True, env=_env(*pythonpath), cwd=pythonpath[0], timeout=600)


# Runs the CLI's main() once per argv in one fresh interpreter: entry points are discovered
# exactly as by the console script, and torch is imported once instead of per command.
_SESSION = """
import contextlib, io, json, sys
from itra_bench.cli import main
done = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    done.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(done))
"""


def _cli_session(argvs: list[list[str]], *pythonpath: Path) -> list[dict[str, Any]]:
    """``itra-bench`` commands run one after another in one fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _SESSION, json.dumps(argvs)],
                          capture_output=True, text=True, env=_env(*pythonpath),
                          cwd=pythonpath[0], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def _rows(table: str) -> list[list[str]]:
    """Cells of the body rows of a rich table printed to a pipe."""
    return [[cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in table.splitlines() if line.strip().startswith("│")]


@pytest.mark.slow
def test_installed_example_is_listed_with_its_distribution(installed: Path) -> None:
    expected = {"models": "colorhist", "losses": "example-cosine",
                "tasks": "example-digits-centroid", "suites": "example"}
    kinds = ["plugins", *expected]
    runs = _cli_session([["list", kind] for kind in kinds], installed)
    listed = dict(zip(kinds, runs, strict=True))
    for proc in runs:
        assert proc["returncode"] == 0, proc["stderr"]

    assert ["example", "itra_bench_example_plugin.plugin", DIST] in _rows(
        listed["plugins"]["stdout"])
    for kind, name in expected.items():
        rows = {row[0]: row for row in _rows(listed[kind]["stdout"])}
        assert name in rows, f"{name} not in `itra-bench list {kind}`:\n{listed[kind]['stdout']}"
        assert rows[name][-2:] == ["example", DIST]


@pytest.mark.slow
def test_installed_example_runs_and_collates(installed: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "results", tmp_path / "cache"
    proc = _cli(["run", "--model", "colorhist", "--tasks", "example", "--output", str(out),
                 "--cache-dir", str(cache), "--workers", "0", "--no-progress"], installed)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    [path] = list(out.rglob("*.json"))
    record = json.loads(path.read_text())
    assert record["task"] == "example-digits-centroid"
    assert record["main_score"] == "acc1"
    assert record["num_samples"] == 540  # the held-out 30 % of the 1797 digits
    # Ten balanced classes: chance is 0.10. Intensity histograms separate digits by how much
    # ink they have; this model scores 0.352 here.
    assert record["metrics"]["acc1"] > 0.3
    assert record["main_score_value"] == record["metrics"]["acc1"]
    # classification_metrics carries per-sample outcomes: the task records them unasked.
    assert record["samples"]["kind"] == "classification"
    assert record["samples"]["units"] == 540
    assert (path.parent / record["samples"]["file"]).is_file()
    interval = record["main_score_interval"]
    assert interval["low"] <= record["main_score_value"] <= interval["high"]

    proc = _cli(["results", str(out)], installed)
    assert proc.returncode == 0, proc.stderr
    board = (out / "leaderboard.csv").read_text()
    assert "colorhist" in board and "example-digits-centroid" in board


@pytest.mark.slow
def test_scheme_clash_with_installed_example_names_both_plugins(installed: Path,
                                                                tmp_path: Path) -> None:
    (tmp_path / "clash_colorhist.py").write_text(textwrap.dedent("""
        from itra_bench import hookimpl
        from itra_bench.model import ModelBuilder


        @hookimpl
        def itra_bench_model_builders():
            return [ModelBuilder("colorhist", lambda rest, options: None)]
    """))
    clash, alone = _cli_session([["list", "models", "--plugin", "clash_colorhist"],
                                 ["list", "models"]], installed, tmp_path)
    message = " ".join(clash["stderr"].split())
    assert clash["returncode"] == 2, clash["stdout"] + clash["stderr"]
    assert "'colorhist'" in message
    assert "'example'" in message and DIST in message
    assert "'clash_colorhist'" in message

    # Without the clashing module the same environment loads fine.
    assert alone["returncode"] == 0, alone["stderr"]
