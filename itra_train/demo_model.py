"""The demo architecture: a tiny OpenCLIP-architecture dual encoder that needs no download.

The ``demo`` model scheme comes from the trainer's plugin (:mod:`itra_train.plugin`):
``demo`` is this architecture trained on scikit-learn's digits at first use, and
``demo:random`` is :func:`build_random_demo`, the same architecture with a fixed, seeded
random initialisation (seed 0), for exercising the pipeline without any training. The
architecture is the ``openclip`` plugin's packaged ``itra-demo`` config, built through the
registry like any ``openclip:`` model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from itra_bench import (
    ModelOptions,
    Registry,
    UserError,
    active_registry,
    load_registry,
    make_fingerprint,
)

if TYPE_CHECKING:
    from itra_bench import EncoderModel

#: The openclip architecture of the demo (the name the trainer's demo recipe uses too).
DEMO_ARCH = "itra-demo"
DEMO_SEED = 0


def build_random_demo(registry: Registry | None = None) -> EncoderModel:
    """The demo architecture with its seeded random weights, identical on every call, built
    by the ``openclip`` plugin of ``registry`` (default: the active one, else the installed
    plugins)."""
    import open_clip

    registry = registry or active_registry() or load_registry([], [])
    if "openclip" not in registry.models:
        raise UserError("demo:random is an openclip architecture (openclip:itra-demo), but no "
                        "loaded plugin provides the openclip model scheme: do not disable the "
                        "openclip plugin (and install open_clip_torch)")
    model = registry.build_model("openclip", DEMO_ARCH,
                                 ModelOptions(random_init=True, seed=DEMO_SEED))
    # The id demo:random has always had: the architecture and the seed. (The openclip
    # builder registered the config with open_clip, which hands out a copy.)
    config = open_clip.get_model_config(DEMO_ARCH)
    model.fingerprint = make_fingerprint({"builder": "demo", "config": config,
                                          "random_init": True, "seed": DEMO_SEED})
    return model
