"""The ``checkpoint`` model scheme: ``itra-bench run --model path/to/epoch_N.pt``.

The checkpoint carries the settings that built its model, so no other flag is needed: the
towers are rebuilt from their random initialisation and the trained weights loaded over them.
"""

from __future__ import annotations

from pathlib import Path

from itra_bench import hookimpl
from itra_bench.errors import UserError
from itra_bench.fingerprint import fingerprint
from itra_bench.model import ModelBuilder, ModelOptions

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
    model = build_model(cfg, registry, use_weights=False)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: its weights do not fit the model its settings describe "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was it written "
                        "by another version of itra-train?")
    model.fingerprint = fingerprint({"builder": "checkpoint", "config": ckpt["config"],
                                     "epoch": ckpt.get("epoch")}, [path])
    model.name = str(path)
    return model.eval()


def build_checkpoint(rest: str, options: ModelOptions) -> ItraModel:
    """Build ``checkpoint:PATH`` (a bare existing path is routed here by the runner)."""
    if not rest:
        raise UserError("checkpoint: give a path, e.g. --model logs/run/checkpoints/epoch_2.pt")
    return load_checkpoint_model(rest)


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder("checkpoint", build_checkpoint, example="logs/run/checkpoints/epoch_2.pt",
                         description="an itra-train checkpoint (its settings rebuild the model)")]
