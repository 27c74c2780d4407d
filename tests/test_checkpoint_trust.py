"""Checkpoints of towers that a third-party plugin builds: their fingerprint covers that
plugin's distribution and version (or, for a ``--plugin`` module, its source), a changed or
uninstalled plugin is never served from the feature cache, and a checkpoint never decides
which code is imported.

The plugin ``myshapes`` is installed for real: a module plus a ``.dist-info`` folder
(metadata and entry point) in a folder on ``sys.path``, which is what ``pip install`` leaves
in site-packages; "upgrading" it rewrites both, "uninstalling" removes them.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_data import TINY, digits_csv

#: The plugin's source; ``{sign}`` is its forward pass (what 0.3.2 changes).
PLUGIN = '''
import torch
from torchvision import transforms

from itra_bench import hookimpl
from itra_bench.model import IMAGE, EncoderModel, ModelBuilder


class Shapes(EncoderModel):
    """An image tower: a linear map of 8x8 pixels."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Linear(3 * 8 * 8, 16)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(16, 3 * 8 * 8, generator=g) * 0.1)
        self.modalities = frozenset({IMAGE})
        # Careless, as plugin authors are: the same id whatever the version.
        self.fingerprint = "myshapes-tiny"
        self.image_transform = transforms.Compose([transforms.Resize((8, 8)),
                                                   transforms.ToTensor()])

    def encode_image(self, images):
        return {forward}


def _build(rest, options):
    return Shapes()


@hookimpl
def itra_bench_model_builders():
    return [ModelBuilder("myshapes", _build, description="test tower", lazy=True)]
'''
FORWARDS = {"0.3.1": "self.proj(images.flatten(1))",
            "0.3.2": "self.proj(images.flatten(1).flip(1)).relu()"}
RUN = ("--tasks", "digits-knn", "--workers", "0", "--device", "cpu", "--no-progress",
       "--resamples", "0")


def _install(site: Path, version: str | None, *, dist: bool = True) -> None:
    """Install ``myshapes`` VERSION into ``site`` (None: uninstall); ``dist=False`` writes the
    module only (for ``--plugin myshapes``)."""
    for old in site.glob("myshapes*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    if version is not None:
        (site / "myshapes.py").write_text(PLUGIN.replace("{forward}", FORWARDS[version]))
        if dist:
            info = site / f"myshapes-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: myshapes\nVersion: {version}\n")
            (info / "entry_points.txt").write_text("[itra_bench]\nmyshapes = myshapes\n")
    # What a new process would see: no module of the old version, fresh path listings.
    sys.modules.pop("myshapes", None)
    importlib.invalidate_caches()


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("myshapes", None)


def _train(train, tmp_path: Path, *extra: str) -> Path:
    data = digits_csv(tmp_path / "digits", 16)
    res = train("--train-data", data, "--logs", tmp_path / "logs", "--name", "run", *TINY,
                "--image-tower", "myshapes:tiny", "--text-tower", "openclip:itra-demo",
                "--epochs", "1", "--batch-size", "8", *extra)
    assert res.code == 0, res
    return tmp_path / "logs" / "run" / "checkpoints" / "epoch_1.pt"


def _score(cli, ckpt: Path, out: Path, cache: Path | None, *extra: str) -> dict:
    cache_args = ("--cache-dir", cache) if cache else ("--no-cache",)
    res = cli("run", "--model", ckpt, *RUN, "--output", out, *cache_args, *extra)
    assert res.code == 0, res
    records = [json.loads(p.read_text()) for p in out.rglob("knn.json")]
    return records


def _latest(records: list[dict], fingerprint: str) -> dict:
    (record,) = [r for r in records if r["model"]["fingerprint"] == fingerprint]
    return record


def test_plugin_upgrade_recomputes_and_uninstall_refuses(site, train, cli, tmp_path):
    _install(site, "0.3.1")
    ckpt = _train(train, tmp_path)
    out, cache = tmp_path / "out", tmp_path / "cache"
    (old,) = _score(cli, ckpt, out, cache)

    _install(site, "0.3.2")
    records = _score(cli, ckpt, out, cache)
    assert len(records) == 2, "the upgraded plugin's features were served from the cache"
    (new,) = [r for r in records if r["model"]["fingerprint"] != old["model"]["fingerprint"]]
    (truth,) = _score(cli, ckpt, tmp_path / "truth", None)
    assert new["model"]["fingerprint"] == truth["model"]["fingerprint"]
    assert new["metrics"] == truth["metrics"]
    assert new["metrics"] != old["metrics"]  # the forward pass did change
    # The results name the plugin that built the image tower, with its version.
    for record, version in ((old, "0.3.1"), (new, "0.3.2")):
        tower = record["providers"]["towers"]["image"]
        assert (tower["distribution"], tower["version"]) == ("myshapes", version), tower

    _install(site, None)
    res = cli("run", "--model", ckpt, *RUN, "--output", out, "--cache-dir", cache)
    assert res.code == 2, res
    assert "myshapes" in res.err and "Traceback" not in res.err
    assert "--plugin" in res.err and "install" in res.err


def test_plugin_module_change_recomputes(site, train, cli, tmp_path):
    """A tower from a ``--plugin`` module (no distribution, no version): its source keys the
    fingerprint, and the checkpoint needs ``--plugin`` again to evaluate."""
    _install(site, "0.3.1", dist=False)
    ckpt = _train(train, tmp_path, "--plugin", "myshapes")
    out, cache = tmp_path / "out", tmp_path / "cache"
    res = cli("run", "--model", ckpt, *RUN, "--output", out, "--cache-dir", cache)
    assert res.code == 2 and "--plugin myshapes" in res.err, res
    (old,) = _score(cli, ckpt, out, cache, "--plugin", "myshapes")
    _install(site, "0.3.2", dist=False)
    records = _score(cli, ckpt, out, cache, "--plugin", "myshapes")
    assert len(records) == 2, "the changed module's features were served from the cache"
    (truth,) = _score(cli, ckpt, tmp_path / "truth", None, "--plugin", "myshapes")
    assert _latest(records, truth["model"]["fingerprint"])["metrics"] == truth["metrics"]


# -- a checkpoint never decides which code is imported ----------------------------------------

EVIL = "from pathlib import Path\nPath(__file__).with_name('PWNED').write_text('ran')\n"


def _evil_checkpoint(train, tmp_path: Path, plugin: str) -> Path:
    """A checkpoint that passes the weights-only check but names an unknown tower scheme and
    the module ``plugin`` as the plugin to import for it."""
    data = digits_csv(tmp_path / "digits", 8)
    res = train("--train-data", data, "--logs", tmp_path / "logs", "--name", "run", *TINY,
                "--epochs", "1", "--batch-size", "8")
    assert res.code == 0, res
    ckpt = torch.load(tmp_path / "logs" / "run" / "checkpoints" / "epoch_1.pt",
                      weights_only=True)
    ckpt["config"]["image_tower"] = "evilscheme:x"
    ckpt["plugins"] = [plugin]
    folder = tmp_path / "download"
    folder.mkdir()
    torch.save(ckpt, folder / "epoch_2.pt")
    (folder / "evil_plugin.py").write_text(EVIL)
    return folder / "epoch_2.pt"


def _python_m(module: str, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("plugin", ["evil_plugin", "this"])
def test_checkpoint_names_a_module_it_is_not_imported(train, tmp_path, plugin):
    ckpt = _evil_checkpoint(train, tmp_path, plugin)
    folder = ckpt.parent
    # The torchrun/srun form: `python -m` puts the current folder on the import path.
    res = _python_m("itra_bench.cli", "run", "--model", ckpt.name, *RUN, "--output",
                    tmp_path / "out", "--no-cache", cwd=folder)
    assert res.returncode == 2, res
    assert not (folder / "PWNED").exists(), "a module named by the checkpoint was imported"
    assert "Beautiful is better than ugly" not in res.stdout + res.stderr
    assert "evilscheme" in res.stderr and plugin in res.stderr and "--plugin" in res.stderr
    assert "Traceback" not in res.stderr

    # The trainer's --teacher reads checkpoints the same way.
    data = digits_csv(tmp_path / "teach", 8)
    res = _python_m("itra_train.cli", "--train-data", data, "--logs", tmp_path / "tlogs",
                    *TINY, "--epochs", "1", "--batch-size", "8", "--teacher", ckpt.name,
                    "--loss", "rkd", "--distill-image", "image", cwd=folder)
    assert res.returncode == 2, res
    assert not (folder / "PWNED").exists(), "a module named by the checkpoint was imported"
    assert "Beautiful is better than ugly" not in res.stdout + res.stderr
    assert "evilscheme" in res.stderr and "Traceback" not in res.stderr
