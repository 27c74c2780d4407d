"""Models from itra-train checkpoints: ``itra-bench run --model path/to/epoch_N.pt`` (the
``checkpoint`` scheme, registered by :mod:`itra_train.plugin`).

The checkpoint carries the settings that built its model, so no other flag is needed: the
towers are rebuilt from their random initialisation and the trained weights loaded over them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from itra_bench import (
    ModelOptions,
    Registry,
    UserError,
    active_registry,
    expand_path,
    load_registry,
    make_fingerprint,
)

from . import checkpoint
from .config import from_dict
from .towers import ItraModel, build_model, tower_providers, tower_schemes


def load_checkpoint_model(path: str | Path, registry: Registry | None = None) -> ItraModel:
    """The model of an itra-train checkpoint, on the CPU in eval mode.

    Its towers are rebuilt by the plugins of ``registry`` (default: those of the command
    building it, else the installed ones); a plugin the checkpoint names is never imported
    because it names it. The fingerprint covers the towers' plugins and versions.
    """
    path = Path(path)
    ckpt = checkpoint.load(path)
    cfg = from_dict(ckpt["config"])
    registry = registry or active_registry() or load_registry([], [])
    schemes = tower_schemes(cfg)
    missing = set(schemes.values()) - set(registry.models)
    if missing:
        recorded = ckpt.get("plugins")
        if isinstance(recorded, dict):  # only the towers whose scheme is missing
            recorded = {p: r for p, r in recorded.items() if schemes.get(p) in missing}
        raise UserError(_missing_towers_message(path, sorted(missing), recorded))
    towers = tower_providers(cfg, registry)
    model = build_model(cfg, registry, use_weights=False)
    missing_keys, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing_keys or unexpected:
        raise UserError(f"{path}: its weights do not fit the model its settings describe "
                        f"(missing {missing_keys[:3]}, unexpected {unexpected[:3]}); was it "
                        "written by another version of itra-train?")
    # The towers' code decides the features as much as the weights do: a new version of a
    # tower's plugin is another model.
    model.fingerprint = make_fingerprint({"builder": "checkpoint", "config": ckpt["config"],
                                          "epoch": ckpt.get("epoch"), "towers": towers},
                                         [path])
    model.tower_providers = towers
    model.name = str(path)
    loss = registry.losses.get(cfg.loss)
    # Which plugin (and version) provided the objective these weights were trained with.
    model.provenance = {"loss": {"name": cfg.loss,
                                 **(loss.plugin.as_record() if loss else {"plugin": None})}}
    return model.eval()


def _missing_towers_message(path: Path, schemes: list[str], recorded: Any) -> str:
    """Why a checkpoint's towers cannot be rebuilt, and how to provide their plugins.
    ``recorded`` is what the checkpoint says of them (untrusted, for the message only):
    ``{"image": PluginInfo record, ...}``, or module names in older checkpoints."""
    records = recorded.values() if isinstance(recorded, dict) else \
        [{"module": m} for m in recorded] if isinstance(recorded, list) else []
    named: dict[str, str] = {}
    for r in records:
        if isinstance(r, dict) and isinstance(r.get("module"), str):
            dist = f"{r.get('distribution', '')} {r.get('version', '')}".strip()
            named[r["module"]] = f" (distribution {dist})" if dist and \
                not dist.startswith("(") else ""
    sources = ", ".join(f"module {m!r}{d}" for m, d in sorted(named.items()))
    took = f", which its training run took from {sources}" if named else ""
    how = f"--plugin {sorted(named)[0]}" if named else "--plugin MODULE"
    return (f"{path}: no loaded plugin provides the model scheme(s) {', '.join(schemes)} of "
            f"its towers{took}. A checkpoint never decides which code is imported: install "
            f"the plugin that provides them, or pass its module with `{how}` if it is not "
            "installed, and rerun.")


def build_checkpoint(rest: str, options: ModelOptions) -> ItraModel:
    """Build ``checkpoint:PATH`` (a bare existing path is routed here by the runner)."""
    if not rest:
        raise UserError("checkpoint: give a path, e.g. --model logs/run/checkpoints/epoch_2.pt")
    return load_checkpoint_model(expand_path(rest))
