"""The model contract every model plugin returns, and the options a builder receives."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

# The torch-free parts of the contract, re-exported: plugins may import them from here.
from itra_bench.model_api import IMAGE, TEXT, ModelBuilder, ModelOptions  # noqa: F401


class EncoderModel(nn.Module):
    """An image and/or text encoder as itra-bench evaluates it.

    Subclasses set ``modalities``, ``fingerprint`` and (for image models) ``image_transform``,
    and implement ``encode_image`` and/or ``encode_text``. Outputs are *not* normalised:
    protocols normalise where their definition says so.
    """

    name: str = "model"
    modalities: frozenset[str] = frozenset()
    #: Required: a stable id of everything that changes the features (weights, config,
    #: version); it keys the feature cache, so the runner refuses a model that leaves it
    #: empty. The runner extends it with the providing plugin's name and version.
    fingerprint: str = ""
    image_transform: Callable[[Any], torch.Tensor] | None = None
    #: Set by the runner: the plugin (``itra_bench.registry.PluginInfo``) that built the model.
    provider: Any = None
    #: Optional extra provenance recorded under ``providers`` in each result, e.g.
    #: ``{"loss": {...}}`` for a checkpoint: the plugin that provided the loss it was trained
    #: with (``PluginInfo.as_record()`` plus the loss name).
    provenance: Mapping[str, Any] = MappingProxyType({})
    #: The plugins, besides the one providing the model's scheme, whose code builds parts of
    #: it and so decides its features, by part: ``{"image": PluginInfo.as_record(), ...}``
    #: for the towers of an itra-train checkpoint. The model's ``fingerprint`` must cover
    #: them; the runner remembers a build only while each is loaded at the same version, and
    #: results record them under ``providers["towers"]``.
    tower_providers: Mapping[str, Mapping[str, str]] = MappingProxyType({})
    #: True when ``encode_text`` runs each batch no longer than its longest text needs and
    #: a text's features do not depend on the other texts of its batch (beyond the last
    #: bits of float arithmetic). ``encode_texts`` then forms batches from texts sorted by
    #: length, so that short texts are not padded to long ones; rows come back in input
    #: order. Leave it False for towers that pad to a fixed length.
    dynamic_text_length: bool = False

    @property
    def device(self) -> torch.device:
        """The device the model's parameters live on (CPU for a parameter-free model)."""
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def visual_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the image tower (reported in ELEVATER submissions); all parameters
        unless a subclass that knows its towers says otherwise."""
        return self.parameters()

    def parameter_count(self, visual: bool = False) -> int:
        """How many parameters the model has (with ``visual``, its image tower)."""
        return sum(p.numel() for p in (self.visual_parameters() if visual else self.parameters()))

    def image_transform_id(self) -> str | None:
        """What identifies the image preprocessing in cache keys: the transform's ``repr``
        (None for a model without one)."""
        return None if self.image_transform is None else repr(self.image_transform)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Embed a batch of preprocessed images ``[B, 3, H, W]`` into ``[B, D]``."""
        raise NotImplementedError(f"{self.name} has no image encoder")

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Embed a list of strings into ``[B, D]`` (tokenisation happens inside)."""
        raise NotImplementedError(f"{self.name} has no text encoder")
