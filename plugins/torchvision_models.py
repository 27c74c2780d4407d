"""``torchvision:`` models: torchvision classifiers as image encoders (penultimate features).

Spec forms (``--pretrained`` wins over the part after ``@``)::

    torchvision:resnet50@/path/weights.pth       a local state dict (its classifier is ignored)
    torchvision:resnet50@IMAGENET1K_V2           torchvision's own weights, from the torch hub
    torchvision:resnet50@ResNet50_Weights.DEFAULT    cache only (never downloaded)
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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
)

from .image_backbone import CHANNELS_LAST, ImageBackbone, is_convolutional
from .image_transforms import IMAGENET_EVAL, ToRGB, describe_transform

SCHEME = "torchvision"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def build_torchvision(rest: str, options: ModelOptions) -> ImageBackbone:
    """Build ``torchvision:NAME[@WEIGHTS]`` on the CPU in eval mode."""
    from torchvision.models import get_model, list_models
    from torchvision.transforms import Compose

    spec = f"{SCHEME}:{rest}"
    name, _, at_part = rest.partition("@")
    ref = options.pretrained or expand_path(at_part) or None
    if name not in list_models():
        close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"{spec}: torchvision has no model {name!r}.{hint} See "
                        "torchvision.models.list_models().")
    if not ref and not options.random_init:
        raise no_weights_error(
            spec, f"a local weights file as torchvision:{name}@/path/weights.pth or with "
                  f"--pretrained, or torchvision weights already in the torch hub cache as "
                  f"torchvision:{name}@IMAGENET1K_V1")

    enum = _weights_enum(name, ref) if ref and not Path(ref).is_file() else None
    config: dict[str, Any] = {"scheme": SCHEME, "arch": name}
    files: list[Path] = []
    with seeded_init(options.seed):
        if enum is not None:
            cached = _cached_file(spec, enum, options.cache_dir)
            with _hub_dir(cached.parent.parent):
                # torchvision's own builder: it also applies per-weights settings (e.g.
                # inception's transform_input) that a plain state-dict load would miss.
                backbone = get_model(name, weights=enum)
            transform: Callable[[Any], torch.Tensor] = Compose([ToRGB(), enum.transforms()])
            config["weights"] = str(enum)
            files.append(cached)
        else:
            backbone = get_model(name, weights=None)
            transform = IMAGENET_EVAL
    head = _final_linear(spec, backbone)
    backbone.set_submodule(head, nn.Identity())
    if enum is None and ref:
        state = {k: v for k, v in load_state_dict_file(ref).items()
                 if not k.startswith(f"{head}.")}
        load_weights_into(backbone, state, str(ref), f"torchvision model {name}")
        files.append(Path(ref))
    elif enum is None:
        config.update(random_init_config(options.seed))
    config["transform"] = describe_transform(transform)
    channels_last = is_convolutional(backbone)
    if channels_last:
        config.update(CHANNELS_LAST)
    model = ImageBackbone(backbone, transform, fingerprint(config, files), spec, channels_last)
    model.name = spec
    return model.eval()


def _weights_enum(name: str, ref: str) -> Any:
    """The torchvision weights enum member ``ref`` names for model ``name``."""
    from torchvision.models import get_model_weights

    if os.sep in ref or "/" in ref or ref.endswith(WEIGHT_SUFFIXES):
        raise UserError(f"{SCHEME}:{name}@{ref}: weights file {ref} does not exist")
    enum_cls = get_model_weights(name)
    prefix, _, member = ref.rpartition(".")
    if prefix and prefix != enum_cls.__name__:
        raise UserError(f"{SCHEME}:{name}@{ref}: {prefix} are not weights of {name} "
                        f"(its weights are {enum_cls.__name__})")
    if member in enum_cls.__members__:
        return enum_cls[member]
    raise UserError(f"{SCHEME}:{name}@{ref}: {ref!r} is neither a weights file nor weights of "
                    f"{name} (known: {', '.join(enum_cls.__members__)})")


def _cached_file(spec: str, enum: Any, cache_dir: str | None) -> Path:
    hub_dir = Path(cache_dir or torch.hub.get_dir()).expanduser()
    path = hub_dir / "checkpoints" / os.path.basename(urlparse(enum.url).path)
    if not path.is_file():
        raise UserError(
            f"{spec}: {enum} is not in the torch hub cache: expected {path}. Nothing is "
            f"downloaded at run time: download {enum.url} on a machine with network and put "
            f"it there (or point --cache-dir at a hub folder holding checkpoints/), or pass a "
            f"local weights file with --pretrained."
        )
    return path


@contextlib.contextmanager
def _hub_dir(path: Path) -> Iterator[None]:
    # torchvision reads weights from torch.hub.get_dir()/checkpoints; point it at the folder
    # the file was found in for the duration of the build only.
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(path))
    try:
        yield
    finally:
        torch.hub.set_dir(before)


def _final_linear(spec: str, backbone: nn.Module) -> str:
    linears = [n for n, m in backbone.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"{spec}: this model has no final linear classifier to remove, so "
                        "itra-bench cannot take penultimate features from it")
    return linears[-1]
