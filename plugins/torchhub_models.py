"""``torchhub:`` models: an entrypoint of a torch.hub repository already on disk.

Spec: ``torchhub:REPO:NAME[@/path/weights]``. ``REPO`` is a folder holding ``hubconf.py``, or
``owner/repo[:ref]`` found in the hub cache (``<hub dir>/owner_repo_ref``, the layout
``torch.hub.load`` writes; ``--cache-dir`` names another hub dir). Nothing is downloaded.

Weights come from a local file (``@...`` or ``--pretrained``; the entrypoint is then called
with ``pretrained=False`` when it takes that argument), or from the entrypoint's own
``pretrained=True`` loading, allowed only from files already in the hub cache. The model's
output must be a ``[B, D]`` feature tensor; images get ImageNet preprocessing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import torch
from torch import nn

from itra_bench.errors import UserError
from itra_bench.fingerprint import fingerprint
from itra_bench.model import ModelOptions
from itra_bench.paths import expand_path
from itra_bench.weights import (
    load_state_dict_file,
    load_weights_into,
    no_weights_error,
    random_init_config,
    seeded_init,
    state_dict_digest,
)

from .image_backbone import CHANNELS_LAST, ImageBackbone, is_convolutional
from .image_transforms import IMAGENET_EVAL, describe_transform

SCHEME = "torchhub"
HUBCONF = "hubconf.py"


def build_torchhub(rest: str, options: ModelOptions) -> ImageBackbone:
    """Build ``torchhub:REPO:NAME[@WEIGHTS]`` on the CPU in eval mode."""
    spec = f"{SCHEME}:{rest}"
    repo, sep, entry = rest.rpartition(":")
    if not sep or not repo or not entry:
        raise UserError(f"{spec}: expected torchhub:REPO:NAME, e.g. "
                        "torchhub:facebookresearch/dinov2:dinov2_vits14 or "
                        "torchhub:/path/to/repo:my_model")
    name, _, at_part = entry.partition("@")
    weights = options.pretrained or expand_path(at_part) or None
    hub_dir = Path(options.cache_dir or torch.hub.get_dir()).expanduser()
    repo_dir = _repo_dir(spec, expand_path(repo), hub_dir)
    fn = _entrypoint(spec, repo_dir, name)
    params = inspect.signature(fn).parameters

    kwargs: dict[str, Any] = {}
    own_weights = False
    if weights or options.random_init:
        if "pretrained" in params:
            kwargs["pretrained"] = False
        elif "weights" in params:
            kwargs["weights"] = None
    elif "pretrained" in params:
        kwargs["pretrained"] = True
        own_weights = True
    else:
        raise no_weights_error(
            spec, f"a local weights file as {SCHEME}:{repo}:{name}@/path/weights.pth or with "
                  f"--pretrained (entrypoint {name} takes no `pretrained` argument to load its "
                  "own)")

    with seeded_init(options.seed), _add_to_path(repo_dir):
        with _no_downloads(spec, hub_dir) if own_weights else contextlib.nullcontext():
            net = fn(**kwargs)
    if not isinstance(net, nn.Module):
        raise UserError(f"{spec}: entrypoint {name} returned {type(net).__name__}, not a "
                        "torch.nn.Module")
    # The repository is identified by its hubconf.py bytes, not by how or where it was found.
    config: dict[str, Any] = {"scheme": SCHEME, "entrypoint": name, "kwargs": kwargs,
                              "transform": describe_transform(IMAGENET_EVAL)}
    files: list[Path] = [repo_dir / HUBCONF]
    if weights:
        load_weights_into(net, load_state_dict_file(weights), str(weights),
                          f"{repo}:{name}")
        files.append(Path(weights))
    elif own_weights:
        # The entrypoint chose and loaded its weights itself: fingerprint what it loaded.
        config["weights_sha256"] = state_dict_digest(net)
    else:
        config.update(random_init_config(options.seed))
    channels_last = is_convolutional(net)
    if channels_last:
        config.update(CHANNELS_LAST)
    model = ImageBackbone(net, IMAGENET_EVAL, fingerprint(config, files), spec, channels_last)
    model.name = spec
    return model.eval()


def _repo_dir(spec: str, repo: str, hub_dir: Path) -> Path:
    """The local folder of ``repo``: itself if a folder, else its hub-cache folder."""
    tried = [Path(repo)]
    if "/" in repo and not Path(repo).exists() and not repo.startswith((".", "/", "~")):
        info, _, ref = repo.partition(":")
        owner, _, name = info.partition("/")
        refs = [ref.replace("/", "_")] if ref else ["main", "master"]
        tried = [hub_dir / f"{owner}_{name}_{r}" for r in refs]
    for path in tried:
        path = path.expanduser()
        if (path / HUBCONF).is_file():
            return path
    raise UserError(
        f"{spec}: no torch.hub repository found; looked for {HUBCONF} in "
        f"{', '.join(str(p) for p in tried)}. Nothing is downloaded at run time: run "
        f"torch.hub.load('{repo}', ...) once on a machine with network and copy the hub folder "
        "here, or give the path of a folder that holds hubconf.py."
    )


def _entrypoint(spec: str, repo_dir: Path, name: str) -> Callable[..., Any]:
    with _add_to_path(repo_dir):
        hubconf = _import_hubconf(repo_dir)
    fn = getattr(hubconf, name, None)
    if name.startswith("_") or not callable(fn):
        known = sorted(n for n, f in vars(hubconf).items()
                       if callable(f) and not n.startswith("_") and inspect.isfunction(f))
        raise UserError(f"{spec}: {repo_dir / HUBCONF} has no entrypoint {name!r} (it has: "
                        f"{', '.join(known) or 'none'})")
    return fn


def _import_hubconf(repo_dir: Path) -> ModuleType:
    # As torch.hub.load(source="local") does, but keeping the function object so its
    # signature can be inspected before calling it.
    spec = importlib.util.spec_from_file_location("hubconf", repo_dir / HUBCONF)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _add_to_path(path: Path) -> Iterator[None]:
    # Entrypoints import their repository's own modules.
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(path))


@contextlib.contextmanager
def _no_downloads(spec: str, hub_dir: Path) -> Iterator[None]:
    """Let torch.hub read cached checkpoints under ``hub_dir`` but refuse any download."""

    def refuse(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
        raise UserError(f"{spec}: the entrypoint wants to download {url}. Nothing is "
                        f"downloaded at run time: put that file at {dst} on this machine, or "
                        "pass a local weights file with --pretrained.")

    before = torch.hub.get_dir()
    torch.hub.set_dir(str(hub_dir))
    try:
        with mock.patch.object(torch.hub, "download_url_to_file", refuse):
            yield
    finally:
        torch.hub.set_dir(before)
