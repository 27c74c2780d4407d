"""Models handed to :func:`itra_bench.evaluate` as Python objects rather than as model specs:
seen through the :class:`~itra_bench.model.EncoderModel` contract, with a fingerprint that
keeps their cached features apart from every other model's."""

from __future__ import annotations

import contextlib
import hashlib
import re
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from itra_bench.errors import UserError
from itra_bench.fingerprint import fingerprint
from itra_bench.model import IMAGE, TEXT, EncoderModel
from itra_bench.weights import state_dict_digest

_MISSING = object()


class InMemoryModel(EncoderModel):
    """An object with ``encode_image`` and/or ``encode_text`` that is not an
    :class:`EncoderModel` itself, wrapped so that the runner can evaluate it.

    What the object declares is used: ``modalities`` (else those it has an ``encode_*`` for),
    ``image_transform`` and ``dynamic_text_length``.
    """

    def __init__(self, inner: Any, modalities: frozenset[str]) -> None:
        super().__init__()
        # A module is registered as a child, so that moving or switching the wrapper to
        # eval mode moves or switches the model.
        self.inner = inner
        self.modalities = modalities
        self.image_transform = getattr(inner, "image_transform", None)
        self.dynamic_text_length = bool(getattr(inner, "dynamic_text_length", False))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """The wrapped object's ``encode_image``, given the images on the model's device."""
        return self.inner.encode_image(images.to(self.device))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """The wrapped object's ``encode_text``."""
        return self.inner.encode_text(texts)


def as_encoder_model(model: Any) -> EncoderModel:
    """``model`` itself when it is an :class:`EncoderModel`, else ``model`` wrapped in an
    :class:`InMemoryModel`; an object that cannot be evaluated is a :class:`UserError`
    saying what it lacks."""
    if isinstance(model, EncoderModel):
        return model
    kind = type(model).__name__
    declared = getattr(model, "modalities", None)
    found = {m for m in (IMAGE, TEXT) if callable(getattr(model, f"encode_{m}", None))}
    if not found:
        raise UserError(f"evaluate(): the model is a {kind}, with neither `encode_image` nor "
                        "`encode_text`. Pass a model spec string (as `itra-bench run --model` "
                        "takes), an itra_bench.EncoderModel, or an object with "
                        "encode_image(images [B, 3, H, W]) and/or encode_text(list of str), "
                        "each returning features [B, D].")
    modalities = frozenset(declared) if declared else frozenset(found)
    lacking = sorted(modalities - found)
    if lacking:
        raise UserError(f"evaluate(): the {kind} declares the modalities "
                        f"{sorted(modalities)} but has no "
                        f"{' or '.join(f'encode_{m}' for m in lacking)} method")
    if IMAGE in modalities and not callable(getattr(model, "image_transform", None)):
        raise UserError(f"evaluate(): the {kind} encodes images but has no `image_transform`: "
                        "set it to the callable that turns a PIL image into the [3, H, W] "
                        "tensor its encode_image takes (e.g. the model's torchvision "
                        "preprocessing)")
    return InMemoryModel(model, modalities)


def derived_fingerprint(model: EncoderModel) -> str:
    """The model's own ``fingerprint``; for a torch module without one, an id of its class
    and its weights (the features of two modules of one class with equal weights are taken
    to be equal). Any other object without a fingerprint is a :class:`UserError`."""
    inner = model.inner if isinstance(model, InMemoryModel) else model
    own = getattr(inner, "fingerprint", "")
    if own:
        return str(own)
    if not isinstance(inner, nn.Module):
        raise UserError(
            f"evaluate(): the {type(inner).__name__} has no `fingerprint`, and it is not a "
            "torch.nn.Module whose weights could stand for one. Set its `fingerprint` to a "
            "stable id of everything that changes its features (weights, config, version), "
            "e.g. itra_bench.make_fingerprint(config, [weights_file]); it keys the feature "
            "cache, so without it two models would share cached features.")
    cls = type(inner)
    # The code and the preprocessing count as well as the weights: a notebook cell that
    # redefines the class (same name, same seed) makes another model.
    return fingerprint({"class": f"{cls.__module__}.{cls.__qualname__}",
                        "code": class_code_digest(cls),
                        "transform": _transform_id(getattr(inner, "image_transform", None)),
                        "weights": state_dict_digest(inner)})


def class_code_digest(cls: type) -> str:
    """An id of the code of ``cls`` and its bases up to torch's own classes: the bytecode,
    constants and names of every function they define (not line numbers, so that moving the
    code does not change it)."""
    digest = hashlib.sha256()
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] in ("torch", "builtins"):
            continue
        for name, value in sorted(vars(klass).items()):
            for function in _functions(value):
                digest.update(f"{klass.__qualname__}.{name}".encode())
                _add_code(digest, function.__code__)
    return digest.hexdigest()[:16]


def _functions(value: Any) -> list[types.FunctionType]:
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel) if f is not None]
    return [value] if isinstance(value, types.FunctionType) else []


def _add_code(digest: Any, code: types.CodeType) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _add_code(digest, const)
        else:
            digest.update(repr(const).encode())


def _transform_id(transform: Any) -> str | None:
    """An id of an image transform: its code for a function, else its repr (torchvision's
    lists each step and its settings) without memory addresses."""
    if transform is None:
        return None
    if isinstance(transform, types.FunctionType):
        digest = hashlib.sha256()
        _add_code(digest, transform.__code__)
        return digest.hexdigest()[:16]
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


@contextlib.contextmanager
def evaluated_as(model: EncoderModel, name: str) -> Iterator[EncoderModel]:
    """``model`` named ``name`` and fingerprinted (:func:`derived_fingerprint`) inside the
    block; afterwards its name, fingerprint, training mode and (when all its tensors were on
    one device) device are what they were, so that the caller's model is left as it came."""
    saved = {key: model.__dict__.get(key, _MISSING) for key in ("name", "fingerprint")}
    training = model.training
    devices = {t.device for t in (*model.parameters(), *model.buffers())}
    try:
        model.fingerprint = derived_fingerprint(model)
        model.name = name
        yield model
    finally:
        for key, value in saved.items():
            if value is _MISSING:
                model.__dict__.pop(key, None)
            else:
                setattr(model, key, value)
        model.train(training)
        if len(devices) == 1:
            model.to(next(iter(devices)))
