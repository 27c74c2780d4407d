"""A model known from its remembered description and built only when something needs it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from itra_bench.errors import UserError
from itra_bench.model import EncoderModel


class LazyModel(EncoderModel):
    """Stands for a model whose build is deferred: name, fingerprint, modalities, the image
    transform's id and parameter counts come from the description of an earlier build, so
    cached features are found without the model. The first call that needs the model itself
    (encoding, its parameters, its transform) builds it with ``build`` and hands on to it.

    ``build`` must return the model with its effective fingerprint; one that differs from the
    description's raises (the description was stale) rather than mixing two models' numbers.
    """

    def __init__(self, description: dict[str, Any], build: Callable[[], EncoderModel],
                 on_build: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.name = description["name"]
        self.fingerprint = description["fingerprint"]
        self.modalities = frozenset(description["modalities"])
        self.dynamic_text_length = bool(description["dynamic_text_length"])
        self.provenance = description.get("provenance") or {}
        self.tower_providers = description.get("tower_providers") or {}
        self._description = description
        self._build = build
        self._on_build = on_build
        self._device: torch.device | None = None
        self._built: EncoderModel | None = None

    @property
    def is_built(self) -> bool:
        """Whether the model has been built."""
        return self._built is not None

    def built(self) -> EncoderModel:
        """The model, built on first call (and moved to the device it was sent to)."""
        if self._built is None:
            if self._on_build is not None:
                self._on_build()
            model = self._build()
            if model.fingerprint != self.fingerprint:
                raise UserError(
                    f"{self.name}: the model built now has fingerprint {model.fingerprint}, "
                    f"not the {self.fingerprint} remembered from its last build; its files "
                    "changed in a way the memo did not see. Rerun: the memo is refreshed.")
            if self._device is not None:
                model = model.to(self._device)
            # Not a submodule: the stand-in's own parameters stay empty, and every nn.Module
            # method below hands on explicitly.
            object.__setattr__(self, "_built", model.eval())
        return self._built

    # -- what the description answers ----------------------------------------------------------

    def image_transform_id(self) -> str | None:
        """The remembered id of the image preprocessing."""
        return self._description["image_transform"]

    def parameter_count(self, visual: bool = False) -> int:
        """The remembered parameter count (of the image tower with ``visual``)."""
        return int(self._description["num_visual_parameters" if visual else "num_parameters"])

    @property
    def device(self) -> torch.device:
        """The device the model is (or will be, once built) on."""
        if self._built is not None:
            return self._built.device
        return self._device or torch.device("cpu")

    def to(self, *args: Any, **kwargs: Any) -> LazyModel:
        """Move the model; before the build, remember where to."""
        target = kwargs.get("device", args[0] if args else None)
        if self._built is None and isinstance(target, str | torch.device) \
                and set(kwargs) <= {"device"} and len(args) <= 1:
            self._device = torch.device(target)
            return self
        self.built().to(*args, **kwargs)
        return self

    def train(self, mode: bool = True) -> LazyModel:
        """Set the training mode (of the built model; an unbuilt one is built in eval mode)."""
        if self._built is not None:
            self._built.train(mode)
        elif mode:
            self.built().train(mode)
        return self

    # -- what needs the model --------------------------------------------------------------------

    @property
    def image_transform(self) -> Callable[[Any], torch.Tensor] | None:  # type: ignore[override]
        return self.built().image_transform

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """The built model's image features."""
        return self.built().encode_image(images)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """The built model's text features."""
        return self.built().encode_text(texts)

    def visual_parameters(self) -> Iterator[nn.Parameter]:
        """The built model's image-tower parameters."""
        return self.built().visual_parameters()

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The built model's parameters."""
        return self.built().parameters(recurse)

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]:
        """The built model's named parameters."""
        return self.built().named_parameters(*args, **kwargs)

    def buffers(self, recurse: bool = True) -> Iterator[torch.Tensor]:
        """The built model's buffers."""
        return self.built().buffers(recurse)

    def named_buffers(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, torch.Tensor]]:
        """The built model's named buffers."""
        return self.built().named_buffers(*args, **kwargs)

    def children(self) -> Iterator[nn.Module]:
        """The built model's child modules."""
        return self.built().children()

    def named_children(self) -> Iterator[tuple[str, nn.Module]]:
        """The built model's named child modules."""
        return self.built().named_children()

    def modules(self) -> Iterator[nn.Module]:
        """The built model's modules."""
        return self.built().modules()

    def named_modules(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Module]]:
        """The built model's named modules."""
        return self.built().named_modules(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The built model's state dict."""
        return self.built().state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """Load into the built model."""
        return self.built().load_state_dict(*args, **kwargs)

    def requires_grad_(self, requires_grad: bool = True) -> LazyModel:
        """Set requires_grad on the built model's parameters."""
        self.built().requires_grad_(requires_grad)
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The built model's forward pass."""
        return self.built()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Attributes a particular model class adds (``clip``, ``tokenizer``, ...).
        if name.startswith("_"):
            return super().__getattr__(name)
        return getattr(self.built(), name)
