"""AdapterHub's methods on the text tower, through its ``adapters`` library (the ``adapters``
extra): bottleneck (Pfeiffer), Houlsby, language adapters (invertible), Compacter, MAM and
UniPELT. The tower's own weights are frozen; only the adapter's train.

``adapters`` pins one minor version of transformers per release, so it lives in an extra of
its own and is checked here before use: a missing library or a transformers it does not
support is refused with the command that fixes it.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import types
from collections.abc import Iterator
from typing import Any

from torch import nn
from yacs.config import CfgNode

from itra_bench import EncoderModel, UserError

from .config import ADAPTERHUB_ADAPTERS, adapter_options

#: The adapter's name inside the transformers model (it appears in parameter names).
NAME = "itra"
#: Method -> the ``adapters`` config class that defines it.
CONFIGS = {"bottleneck": "SeqBnConfig", "houlsby": "DoubleSeqBnConfig",
           "lang_adapter": "SeqBnInvConfig", "compacter": "CompacterConfig",
           "mam": "MAMConfig", "unipelt": "UniPELTConfig"}
#: Methods that hold a prefix-tuning part.
WITH_PREFIX = ("mam", "unipelt")
INSTALL = "pip install -e '.[adapters]' (or pip install 'itra-bench[adapters]')"
PEFT_METHODS = "lora, ia3, prefix_tuning, prompt_tuning"


def _import(flag: str) -> Any:
    """The ``adapters`` module, after checking it is installed beside a transformers it
    supports."""
    from importlib import metadata

    try:
        version = metadata.version("adapters")
    except metadata.PackageNotFoundError:
        raise UserError(f"{flag} is one of AdapterHub's methods, which need the `adapters` "
                        f"extra: {INSTALL}. The extra pins the transformers version that "
                        "`adapters` supports, so install it in an environment of its own; "
                        f"peft's methods ({PEFT_METHODS}) need no extra") from None
    _check_transformers(flag, version, metadata.requires("adapters") or [],
                        metadata.version("transformers"))
    import adapters

    return adapters


def _check_transformers(flag: str, version: str, requires: list[str], installed: str) -> None:
    """Refuse a transformers outside the range ``adapters`` ``version`` declares."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    for line in requires:
        req = Requirement(line)
        if req.name == "transformers" and req.marker is None:
            if not req.specifier.contains(Version(installed), prereleases=True):
                raise UserError(
                    f"{flag}: adapters {version} needs transformers{req.specifier}, but "
                    f"transformers {installed} is installed. Install the extra in an "
                    f"environment of its own, which brings the transformers it needs: "
                    f"python -m venv .venv-adapters && .venv-adapters/bin/{INSTALL}")


def _flag(cfg: CfgNode) -> str:
    return f"--adapter {cfg.adapter}"


def method(cfg: CfgNode) -> str:
    """The AdapterHub method ``--adapter`` names (ITRA's aliases resolved)."""
    return ADAPTERHUB_ADAPTERS[cfg.adapter]


def _fields(cls: type) -> dict[str, Any]:
    """Keyword fields of a config class and their defaults."""
    return {name: p.default for name, p in inspect.signature(cls).parameters.items()}


def _check_value(where: str, key: str, value: Any, default: Any) -> None:
    """A value must be of its field's type, judged by the default (None: anything)."""
    if default is None or default is inspect.Parameter.empty:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise UserError(f"--adapter-options {key}={value!r}: {where} expects a "
                        f"{type(default).__name__} (default {default!r})")


def build_config(cfg: CfgNode) -> Any:
    """The ``adapters`` config object of ``--adapter``, with ``--adapter-options`` applied
    and checked against the config class's fields."""
    adapters = _import(_flag(cfg))
    name = method(cfg)
    cls = getattr(adapters, CONFIGS[name])
    options = adapter_options(cfg)
    fields = _fields(cls)
    if not issubclass(cls, adapters.ConfigUnion):
        for key, value in options.items():
            if key not in fields:
                raise UserError(f"--adapter-options {key}: not a field of {cls.__name__} "
                                f"({_flag(cfg)}); its fields: {', '.join(fields)}")
            _check_value(cls.__name__, key, value, fields[key])
        return cls(**options)
    # MAM and UniPELT combine configs: a key names the part, then its field.
    # Its parts come in the order of its constructor's parameters.
    parts = dict(zip(fields, cls().configs, strict=True))
    changes: dict[str, dict[str, Any]] = {part: {} for part in parts}
    for key, value in options.items():
        part, _, field = key.partition(".")
        if part not in parts or not field:
            raise UserError(f"--adapter-options {key}: {cls.__name__} ({_flag(cfg)}) combines "
                            f"{', '.join(parts)}; name the part, then its field "
                            f"(PART.FIELD=VALUE, e.g. adapter.reduction_factor=4)")
        sub = _fields(type(parts[part]))
        if field not in sub:
            raise UserError(f"--adapter-options {key}: not a field of "
                            f"{type(parts[part]).__name__} (the {part} part of "
                            f"{cls.__name__}); its fields: {', '.join(sub)}")
        _check_value(type(parts[part]).__name__, key, value, sub[field])
        changes[part][field] = value
    return cls(**{part: config.replace(**changes[part]) if changes[part] else config
                  for part, config in parts.items()})


def check(cfg: CfgNode) -> None:
    """Check at start-up that ``--adapter`` and ``--adapter-options`` can be built."""
    build_config(cfg)


def _transformers_model(root: nn.Module) -> tuple[str, nn.Module] | None:
    """(qualified name, model) of the first transformers model inside ``root``."""
    from transformers import PreTrainedModel

    for name, module in root.named_modules():
        if isinstance(module, PreTrainedModel):
            return name, module
    return None


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence a library logger's warnings for the block."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def peft_methods(model_type: str) -> list[str]:
    """The peft methods ``--adapter`` can add to a transformers model of ``model_type``: LoRA
    and (IA)^3 where peft knows the layers to wrap, prefix and prompt tuning on any."""
    from peft.utils import (
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
    )

    return [*(["lora"] if model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
              else []),
            *(["ia3"] if model_type in TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING
              else []),
            "prefix_tuning", "prompt_tuning"]


def _describe(encoder: EncoderModel) -> str:
    return str(getattr(encoder, "name", "") or type(encoder).__name__)


def add_adapter(encoder: EncoderModel, cfg: CfgNode) -> None:
    """Add ``cfg.adapter`` to the text tower ``encoder`` in place; only the adapter's
    parameters stay trainable."""
    adapters = _import(_flag(cfg))
    config = build_config(cfg)
    name = method(cfg)
    found = _transformers_model(encoder)
    tower = _describe(encoder)
    if found is None:
        raise UserError(f"{_flag(cfg)}: AdapterHub's methods need a transformers text tower "
                        f"(--text-tower hf:PATH or sbert:PATH); the text tower {tower} is not "
                        f"one. It takes peft's lora and ia3 (an OpenCLIP text transformer)")
    prefix, model = found
    kind = model.config.model_type
    try:
        adapters.init(model)
    except ValueError as exc:
        # Only the architectures built into `adapters` are supported: others need a custom
        # interface, which cannot express prefix tuning (and so MAM and UniPELT).
        raise UserError(f"{_flag(cfg)}: AdapterHub's `adapters` has no built-in support for "
                        f"{type(model).__name__} (model type {kind!r}) of the text tower "
                        f"{tower}; it supports BERT, RoBERTa, XLM-R, CLIP and others of its "
                        f"own model list. On this tower use peft's methods: "
                        f"{', '.join(peft_methods(kind))}") from exc
    try:
        # add_adapter warns that no adapter is active before it activates the new one.
        with _quiet("adapters.model_mixin"):
            model.add_adapter(NAME, config=config, set_active=True)
    except (AssertionError, ValueError, TypeError, RuntimeError) as exc:
        options = " ".join(cfg.adapter_options) or "none"
        raise UserError(f"{_flag(cfg)}: adapters cannot build {CONFIGS[name]} on "
                        f"{type(model).__name__} (hidden size "
                        f"{getattr(model.config, 'hidden_size', '?')}) with --adapter-options "
                        f"{options}: {exc}. Change --adapter-options (e.g. reduction_factor)"
                        ) from exc
    model.train_adapter(NAME)
    if hasattr(model, "get_text_features"):
        # A dual encoder's text side runs through get_text_features, which (unlike forward)
        # opens no adapter context: Compacter's shared weights and the prefixes of MAM and
        # UniPELT live in that context.
        from adapters.context import ForwardContext

        text_features = ForwardContext.wrap(type(model).get_text_features)
        model.get_text_features = types.MethodType(text_features, model)
    adapter_params = {id(p) for p in model.parameters() if p.requires_grad}
    # The text tower of a dual encoder (CLIP) gets adapters in its vision half too; that half
    # is unused on the text side, so its adapters stay frozen, out of the optimizer.
    vision = getattr(model, "vision_model", None)
    if vision is not None:
        adapter_params -= {id(p) for p in vision.parameters()}
    for param in encoder.parameters():
        param.requires_grad_(id(param) in adapter_params)
    if not adapter_params:
        raise UserError(f"{_flag(cfg)}: adapters added no trainable parameters to "
                        f"{type(model).__name__} ({prefix or 'the tower'})")
