"""The torch-free half of the model contract: modality names, the options a builder
receives and the builder record plugins return (importable by ``itra-bench list`` without
loading torch; :mod:`itra_bench.model` re-exports them)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from itra_bench.paths import expand_path

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

#: The image modality: a model that lists it in ``EncoderModel.modalities`` encodes images.
IMAGE = "image"
#: The text modality: a model that lists it in ``EncoderModel.modalities`` encodes text.
TEXT = "text"
#: The token poolings of transformer text encoders that ``--text-pooler`` chooses from.
TEXT_POOLERS = ("cls", "mean")


@dataclass(frozen=True, init=False)
class ModelOptions:
    """Options from the command line that a model builder may honour.

    pretrained: a local weights file given with ``--pretrained`` (overrides the one in the spec).
        Like ``cache_dir``, it arrives with ``~`` and ``$VAR`` expanded.
    random_init: ``--random-init``; without it a builder must refuse a model with no weights.
    text_pooler: ``--text-pooler``, ``cls`` or ``mean`` token pooling for transformer text
        encoders (None: the model's own default). ``pooler``, its old name, is still taken
        as a keyword and read as an attribute.
    cache_dir: where builders look for locally cached pretrained weights.
    seed: seed for any random initialisation, so random-init fingerprints are reproducible.
    """

    pretrained: str | None = None
    random_init: bool = False
    text_pooler: str | None = None
    cache_dir: str | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __init__(self, pretrained: str | None = None, random_init: bool = False,
                 text_pooler: str | None = None, cache_dir: str | None = None, seed: int = 0,
                 extra: dict[str, Any] | None = None, *, pooler: str | None = None) -> None:
        if pooler is not None:
            if text_pooler is not None and text_pooler != pooler:
                raise TypeError("ModelOptions: give text_pooler alone (pooler is its old name)")
            warnings.warn("ModelOptions(pooler=...) is deprecated; use text_pooler=",
                          DeprecationWarning, stacklevel=2)
            text_pooler = pooler
        values = {"pretrained": pretrained, "random_init": random_init,
                  "text_pooler": text_pooler, "cache_dir": cache_dir, "seed": seed,
                  "extra": {} if extra is None else extra}
        for name, value in values.items():
            # Expanded once here, so that every builder (plugins' too) gets a usable path.
            if name in ("pretrained", "cache_dir") and value:
                value = expand_path(value)
            object.__setattr__(self, name, value)

    @property
    def pooler(self) -> str | None:
        """The old name of :attr:`text_pooler`, for builders that read it."""
        return self.text_pooler


@dataclass(frozen=True)
class ModelBuilder:
    """A model family a plugin provides, addressed by ``scheme:`` in a model spec.

    ``build(rest, options)`` receives what follows ``scheme:`` in the spec (an empty string for
    a bare ``scheme``) and returns an :class:`itra_bench.model.EncoderModel` on the CPU.
    ``build`` may be an ``itra_bench.lazy_import.LazyFactory`` naming the function by module
    and attribute, so that torch and the model library are imported only when a model is
    built, not whenever the plugin is loaded (``itra-bench list``, ``--help``).
    """

    scheme: str
    build: Callable[[str, ModelOptions], EncoderModel]
    description: str = ""
    example: str = ""
    #: True when ``build`` loads the local weights file that ``--pretrained`` names
    #: (``options.pretrained``); the runner refuses ``--pretrained`` for any other builder,
    #: rather than evaluate weights the user did not ask for.
    takes_pretrained: bool = False
    #: True when what ``build`` returns (its fingerprint above all) is decided by the spec,
    #: the options, the files and folders the spec names, the files hashed with
    #: ``itra_bench.fingerprint`` during the build (weights found in a cache, say) and the
    #: versions of the plugin and model libraries. The runner then remembers the build beside
    #: the feature cache, and a later run whose features are all cached does not build the
    #: model at all. Leave it False if the build depends on anything else.
    lazy: bool = False
