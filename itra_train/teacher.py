"""A frozen teacher for knowledge distillation: any model itra-bench can load."""

from __future__ import annotations

from pathlib import Path

import torch
from yacs.config import CfgNode

from itra_bench import (
    EncoderModel,
    FeatureCache,
    ImageFiles,
    ModelOptions,
    Registry,
    RunContext,
    UserError,
    files_identity,
    parse_model_spec,
)

from .data import CsvImageText


def build_teacher(cfg: CfgNode, registry: Registry) -> EncoderModel:
    """The ``--teacher`` model, frozen (no parameter requires a gradient), in eval mode."""
    spec = cfg.teacher
    scheme = spec.partition(":")[0]
    if scheme not in registry.models and _looks_like_path(spec) and not Path(spec).exists():
        raise UserError(f"--teacher {spec}: the file {spec} does not exist; give an itra-train "
                        "checkpoint or a model spec such as openclip:ARCH@WEIGHTS")
    scheme, rest = parse_model_spec(spec, registry)
    options = ModelOptions(cache_dir=cfg.weights_cache or None, seed=cfg.seed)
    teacher = registry.build_model(scheme, rest, options)
    teacher.name = cfg.teacher
    for side in (cfg.distill_image, cfg.distill_text):
        if side and side not in teacher.modalities:
            raise UserError(f"--teacher {cfg.teacher} has no {side} encoder (it encodes "
                            f"{', '.join(sorted(teacher.modalities))}); change "
                            "--distill-image/--distill-text")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def _looks_like_path(spec: str) -> bool:
    """Whether a model spec that names no scheme was meant as a file."""
    return "/" in spec or "\\" in spec or Path(spec).suffix in (
        ".pt", ".pth", ".bin", ".ckpt", ".safetensors")


class _CsvImages(ImageFiles):
    """The training CSV's images as an itra-bench image source (for the feature cache)."""

    def __init__(self, data: CsvImageText) -> None:
        self.paths = list(data.images)
        self.identity = "itra-train:" + files_identity(self.paths, salt=str(data.path))


def cached_teacher_features(teacher: EncoderModel, data: CsvImageText, sides: set[str],
                            device: torch.device, cache_dir: Path, batch_size: int,
                            workers: int) -> dict[str, torch.Tensor]:
    """The teacher's features of every training row (``{"image": [N, D], "text": [N, D]}``
    for the sides asked), encoded once through itra-bench's feature cache."""
    from itra_bench import encode_images, encode_texts

    ctx = RunContext(device=device, batch_size=batch_size, workers=workers,
                     cache=FeatureCache(cache_dir))
    out: dict[str, torch.Tensor] = {}
    teacher = teacher.to(device)
    if "image" in sides:
        out["image"] = encode_images(teacher, _CsvImages(data), ctx).features
    if "text" in sides:
        out["text"] = encode_texts(teacher, list(data.captions), ctx)
    return out
