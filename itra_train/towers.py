"""The trained model: image tower, text tower, projection heads and a learnable temperature.

Towers are built by the same model plugins that evaluation uses (``openclip:``, ``timm:``,
``hf:``, a plugin's own scheme, ...): ``--image-tower`` / ``--text-tower`` are model specs as
``itra-bench run --model`` takes them, so whatever itra-bench can evaluate it can also train.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import torch
from PIL import Image
from torch import nn
from yacs.config import CfgNode

from itra_bench import IMAGE, TEXT, EncoderModel, ModelOptions, Registry, UserError

from .heads import PrototypeLayer, build_head
from .tower_specs import build_spec, split_spec

#: CLIP's initial temperature (logit scale 1 / 0.07) and its cap (scale 100).
INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


def check_builders(cfg: CfgNode, registry: Registry) -> None:
    """Refuse a ``--image-tower`` / ``--text-tower`` whose scheme no loaded plugin provides,
    suggesting the close match."""
    for side in ("image", "text"):
        spec = cfg[f"{side}_tower"]
        scheme = split_spec(spec)[0]
        if scheme in registry.models:
            continue
        known = sorted(registry.models)
        close = difflib.get_close_matches(scheme, known, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        bare = "" if ":" in spec else " A tower is a model spec SCHEME:MODEL, e.g. openclip:RN50."
        raise UserError(f"--{side}-tower {spec}: no loaded plugin provides the model scheme "
                        f"{scheme!r}.{hint}{bare} Available: {', '.join(known)} (a plugin that "
                        "is not installed loads with --plugin MODULE)")


def tower_schemes(cfg: CfgNode) -> dict[str, str]:
    """The model scheme of each tower, by modality."""
    return {IMAGE: split_spec(cfg.image_tower)[0], TEXT: split_spec(cfg.text_tower)[0]}


def tower_providers(cfg: CfgNode, registry: Registry) -> dict[str, dict[str, str]]:
    """The plugins that provide the towers' schemes, by tower (``PluginInfo.as_record()``):
    what a checkpoint's fingerprint covers, and what its error names when one is missing."""
    return {part: registry.models[scheme].plugin.as_record()
            for part, scheme in tower_schemes(cfg).items() if scheme in registry.models}


def _tower(registry: Registry, spec: str, pretrained: bool, cfg: CfgNode,
           use_weights: bool) -> EncoderModel:
    load = pretrained and use_weights
    scheme, rest = build_spec(spec, load)
    options = ModelOptions(random_init=not load, seed=cfg.seed,
                           text_pooler=cfg.text_pooler or None,
                           cache_dir=cfg.weights_cache or None)
    return registry.build_model(scheme, rest, options)


def tower_width(tower: EncoderModel, modality: str) -> int:
    """The output width of a tower, found with one forward pass on a blank input."""
    with torch.no_grad():
        if modality == IMAGE:
            if tower.image_transform is None:
                raise UserError(f"{tower.name} has no image preprocessing; it cannot be the "
                                "image tower")
            pixels = tower.image_transform(Image.new("RGB", (224, 224)))[None]
            return int(tower.encode_image(pixels).shape[-1])
        return int(tower.encode_text(["a photo."]).shape[-1])


def _freeze(params: Any) -> None:
    for p in params:
        p.requires_grad_(False)


class ItraModel(EncoderModel):
    """Image and text towers with optional projection heads, as trained by itra-train.

    ``forward(images, texts)`` returns the projected (unnormalised) features of both
    modalities and the temperature ``exp(logit_scale)``, which is what a loss consumes;
    ``encode_image`` / ``encode_text`` give the same features to itra-bench's tasks.
    """

    modalities = frozenset({IMAGE, TEXT})

    def __init__(self, image_tower: EncoderModel, text_tower: EncoderModel | None,
                 image_head: nn.Module, text_head: nn.Module, lock_image: bool = False,
                 lock_text: bool = False, prototypes: PrototypeLayer | None = None) -> None:
        super().__init__()
        self.image_tower = image_tower
        # One module serves both modalities when the towers are one CLIP; storing it twice
        # would duplicate its weights in the state dict.
        self.text_tower = text_tower
        self.image_head = image_head
        self.text_head = text_head
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))
        self.prototypes = prototypes
        self.image_transform = image_tower.image_transform
        self.lock_image, self.lock_text = lock_image, lock_text
        self.fingerprint = ""
        self.joint_dim = 0

    @property
    def text_encoder(self) -> EncoderModel:
        """The module that encodes text (the image tower when both are one CLIP)."""
        return self.image_tower if self.text_tower is None else self.text_tower

    @property
    def dynamic_text_length(self) -> bool:  # type: ignore[override]
        """Whether the text tower runs each batch at its own length (the heads act per row,
        so length-sorted batches keep the features)."""
        return bool(getattr(self.text_encoder, "dynamic_text_length", False))

    def visual_parameters(self):  # type: ignore[override]
        """The image tower's and image head's parameters."""
        yield from self.image_tower.visual_parameters()
        yield from self.image_head.parameters()

    def train(self, mode: bool = True) -> ItraModel:
        """Train mode, except for locked towers, which stay in eval mode (LiT)."""
        super().train(mode)
        if mode and self.lock_image:
            self.image_tower.eval()
        if mode and self.lock_text and self.text_tower is not None:
            self.text_tower.eval()
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Projected image features ``[B, D]`` (not normalised)."""
        return self.image_head(self.image_tower.encode_image(images))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Projected text features ``[B, D]`` (not normalised)."""
        return self.text_head(self.text_encoder.encode_text(texts))

    def forward(self, images: torch.Tensor | None, texts: list[str] | None
                ) -> dict[str, torch.Tensor]:
        """Features of the modalities given, their prototype scores when the model has a
        prototype layer, and the temperature, for a loss."""
        out = {"logit_scale": self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()}
        if images is not None:
            out["image_features"] = self.encode_image(images)
        if texts is not None:
            out["text_features"] = self.encode_text(texts)
        if self.prototypes is not None:
            for side in ("image", "text"):
                if f"{side}_features" in out:
                    out[f"{side}_prototypes"] = self.prototypes(out[f"{side}_features"])
        return out


def _shared_clip(cfg: CfgNode) -> bool:
    return (split_spec(cfg.image_tower)[0] == "openclip" and cfg.image_tower == cfg.text_tower
            and cfg.pretrained_image_model == cfg.pretrained_text_model)


def build_model(cfg: CfgNode, registry: Registry, use_weights: bool = True) -> ItraModel:
    """The model described by the settings, on the CPU.

    ``use_weights=False`` builds every tower from its seeded random initialisation, for
    loading a checkpoint's weights over it (no pretrained file is needed then).
    """
    image = _tower(registry, cfg.image_tower, cfg.pretrained_image_model, cfg, use_weights)
    if IMAGE not in image.modalities:
        raise UserError(f"--image-tower {cfg.image_tower}: this model has no image encoder")
    shared = _shared_clip(cfg)
    text = None if shared else _tower(registry, cfg.text_tower, cfg.pretrained_text_model, cfg,
                                      use_weights)
    text_encoder = image if text is None else text
    if TEXT not in text_encoder.modalities:
        raise UserError(f"--text-tower {cfg.text_tower}: this model has no text encoder")
    _freeze_unused(image, text)

    if cfg.adapter:
        from .adapters import add_adapter

        add_adapter(text_encoder, cfg)
    image_dim, text_dim = tower_width(image, IMAGE), tower_width(text_encoder, TEXT)
    heads = (cfg.image_head, cfg.text_head)
    if heads == ("auto", "auto") and image_dim == text_dim and not cfg.embed_dim:
        kinds = ("none", "none")
    else:
        kinds = tuple("linear" if h == "auto" else h for h in heads)
    joint = cfg.embed_dim or (min(image_dim, text_dim) if kinds != ("none", "none")
                              else image_dim)
    image_head = build_head(kinds[0], image_dim, joint, cfg.head_hidden, cfg.head_layers)
    text_head = build_head(kinds[1], text_dim, joint, cfg.head_hidden, cfg.head_layers)
    prototypes = PrototypeLayer(joint, cfg.prototypes) if cfg.prototypes else None

    model = ItraModel(image, text, image_head, text_head, cfg.lock_image, cfg.lock_text,
                      prototypes)
    model.joint_dim = joint
    for side, locked in (("image", cfg.lock_image), ("text", cfg.lock_text)):
        if locked:
            freeze_side(model, side, heads=False)
    return model


def freeze_side(model: ItraModel, side: str, heads: bool = True) -> None:
    """Freeze one modality's tower (and, with ``heads``, its projection head)."""
    if model.text_tower is None:  # one CLIP for both: split it at its visual tower
        visual = {id(p) for p in model.image_tower.clip.visual.parameters()}
        _freeze(p for p in model.image_tower.parameters()
                if (id(p) in visual) == (side == "image"))
    else:
        _freeze((model.image_tower if side == "image" else model.text_tower).parameters())
    if heads:
        _freeze((model.image_head if side == "image" else model.text_head).parameters())


def _freeze_unused(image: EncoderModel, text: EncoderModel | None) -> None:
    """Freeze parameters no forward pass uses (DDP requires every trainable one to get a
    gradient): the unused half of a CLIP used for one modality, and CLIP's own temperature,
    which :class:`ItraModel` replaces with its own."""
    for tower, used in ((image, "image"), (text, "text")):
        clip = getattr(tower, "clip", None)
        if clip is None:
            continue
        for name in ("logit_scale", "logit_bias"):
            p = getattr(clip, name, None)
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)
        if text is None:
            continue  # one CLIP for both modalities
        visual = {id(p) for p in clip.visual.parameters()}
        for p in clip.parameters():
            if (id(p) in visual) != (used == "image"):
                p.requires_grad_(False)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
