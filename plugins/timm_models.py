"""``timm:`` models: timm image backbones, features before the classifier.

``timm:NAME@/path/weights`` (or ``--pretrained``) loads a local state dict; a classifier head
in the file (any class count) is left out, since the model is built without one. ``NAME`` may
carry a pretrained tag (``resnet50.a1_in1k``): it selects that tag's preprocessing.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

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
from .image_transforms import ToRGB

SCHEME = "timm"


def build_timm(rest: str, options: ModelOptions) -> ImageBackbone:
    """Build ``timm:NAME[@WEIGHTS]`` on the CPU in eval mode."""
    import timm
    from timm.data import create_transform, resolve_data_config
    from torchvision.transforms import Compose

    spec = f"{SCHEME}:{rest}"
    name, _, at_part = rest.partition("@")
    weights = options.pretrained or expand_path(at_part) or None
    if not name:
        raise UserError(f"{spec}: name a timm model, e.g. timm:resnet50@/path/weights.pth")
    if not weights and not options.random_init:
        raise no_weights_error(
            spec, f"a local weights file as timm:{name}@/path/weights.safetensors or with "
                  "--pretrained (e.g. model.safetensors from the timm/ hub repository)")
    with seeded_init(options.seed):
        try:
            backbone = timm.create_model(name, pretrained=False, num_classes=0)
        except RuntimeError as exc:
            if "Unknown model" not in str(exc):
                raise
            base = name.split(".")[0]
            close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"{spec}: timm has no model {name!r}.{hint} See "
                            "timm.list_models().") from exc
    if weights:
        state = _without_classifier(load_state_dict_file(weights), backbone)
        load_weights_into(backbone, state, str(weights), f"timm model {name}")
    data_config = resolve_data_config({}, model=backbone)
    transform = Compose([ToRGB(), create_transform(**data_config, is_training=False)])
    config: dict[str, Any] = {"scheme": SCHEME, "arch": name,
                              "data_config": {k: list(v) if isinstance(v, tuple) else v
                                              for k, v in data_config.items()}}
    if not weights:
        config.update(random_init_config(options.seed))
    channels_last = is_convolutional(backbone)
    if channels_last:
        config.update(CHANNELS_LAST)
    model = ImageBackbone(backbone, transform,
                          fingerprint(config, [Path(weights)] if weights else []), spec,
                          channels_last)
    model.name = spec
    return model.eval()


def _without_classifier(state: dict[str, torch.Tensor],
                        backbone: nn.Module) -> dict[str, torch.Tensor]:
    # The backbone is built without a head, so the file's head (trained for whatever classes)
    # has nowhere to go; every other key must still match.
    names = backbone.pretrained_cfg.get("classifier") or ()
    prefixes = tuple(f"{n}." for n in ([names] if isinstance(names, str) else names))
    expected = backbone.state_dict()
    return {k: v for k, v in state.items() if k in expected or not k.startswith(prefixes)}
