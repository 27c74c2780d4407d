"""Models from itra-train checkpoints: ``itra-bench run --model path/to/epoch_N.pt`` (the
``checkpoint`` scheme, registered by :mod:`itra_train.plugin`).

The checkpoint carries the settings that built its model, so no other flag is needed: the
towers are rebuilt from their random initialisation and the trained weights loaded over them.
"""

from __future__ import annotations

from pathlib import Path

from itra_bench.errors import UserError
from itra_bench.fingerprint import fingerprint
from itra_bench.model import ModelOptions

from . import checkpoint
from .config import from_dict
from .towers import ItraModel, build_model


def load_checkpoint_model(path: str | Path, registry=None) -> ItraModel:
    """The model of an itra-train checkpoint, on the CPU in eval mode."""
    from itra_bench.registry import load_registry

    path = Path(path)
    ckpt = checkpoint.load(path)
    cfg = from_dict(ckpt["config"])
    registry = registry or load_registry([], [])
    missing = {cfg.image_model_builder, cfg.text_model_builder} - set(registry.models)
    if missing:
        # A tower from a plugin that is not installed (loaded with --plugin when training):
        # the checkpoint names its module.
        modules = [str(m) for m in ckpt.get("plugins", [])]
        try:
            registry = load_registry(modules, [])
        except UserError as exc:
            raise UserError(f"{path}: its tower scheme(s) {', '.join(sorted(missing))} come "
                            f"from plugin module(s) {', '.join(modules)}, which cannot be "
                            f"loaded ({exc}); install the plugin or put it on PYTHONPATH") from exc
        if missing - set(registry.models):
            raise UserError(f"{path}: no installed plugin provides the model scheme(s) "
                            f"{', '.join(sorted(missing))} of its towers; install the plugin "
                            "that trained it")
    model = build_model(cfg, registry, use_weights=False)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: its weights do not fit the model its settings describe "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was it written "
                        "by another version of itra-train?")
    model.fingerprint = fingerprint({"builder": "checkpoint", "config": ckpt["config"],
                                     "epoch": ckpt.get("epoch")}, [path])
    model.name = str(path)
    loss = registry.losses.get(cfg.loss)
    # Which plugin (and version) provided the objective these weights were trained with.
    model.provenance = {"loss": {"name": cfg.loss,
                                 **(loss.plugin.as_record() if loss else {"plugin": None})}}
    return model.eval()


def build_checkpoint(rest: str, options: ModelOptions) -> ItraModel:
    """Build ``checkpoint:PATH`` (a bare existing path is routed here by the runner)."""
    if not rest:
        raise UserError("checkpoint: give a path, e.g. --model logs/run/checkpoints/epoch_2.pt")
    return load_checkpoint_model(rest)
