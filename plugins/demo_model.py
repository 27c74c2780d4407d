"""The ``demo`` model: a tiny OpenCLIP-architecture dual encoder that needs no download.

``demo`` is that model trained by itra-train on scikit-learn's digits (the embedded demo
recipe, :mod:`itra_train.demo`): trained on first use, in about a minute on two CPU cores,
and cached. ``demo:random`` is the same architecture with a fixed, seeded random
initialisation (seed 0), for exercising the pipeline without any training.
"""

from __future__ import annotations

import json
from pathlib import Path

from itra_bench import hookimpl
from itra_bench.errors import UserError
from itra_bench.fingerprint import fingerprint
from itra_bench.model import EncoderModel, ModelBuilder, ModelOptions
from itra_bench.weights import random_init_config, seeded_init

from .openclip_models import PACKAGED_CONFIGS, OpenCLIPEncoder

#: The architecture, in open_clip's model-config format (also known to open_clip as
#: ``itra-demo``, the name the trainer uses).
DEMO_CONFIG = json.loads((PACKAGED_CONFIGS / "itra-demo.json").read_text())
DEMO_SEED = 0


def build_random_demo() -> OpenCLIPEncoder:
    """The demo architecture with its seeded random weights, identical on every call."""
    import open_clip

    with seeded_init(DEMO_SEED):
        clip = open_clip.CLIP(**DEMO_CONFIG).eval()
    tokenizer = open_clip.tokenizer.SimpleTokenizer(
        context_length=DEMO_CONFIG["text_cfg"]["context_length"])
    transform = open_clip.image_transform(DEMO_CONFIG["vision_cfg"]["image_size"], is_train=False)
    fp = fingerprint({"builder": "demo", "config": DEMO_CONFIG, **random_init_config(DEMO_SEED)})
    return OpenCLIPEncoder(clip, tokenizer, transform, fp)


def build_demo(rest: str, options: ModelOptions) -> EncoderModel:
    """``demo`` (trained, cached) or ``demo:random`` (untrained)."""
    if rest == "random":
        return build_random_demo()
    if rest:
        raise UserError(f"unknown demo variant 'demo:{rest}'; use demo (trained on digits) or "
                        "demo:random (untrained)")
    from itra_train.checkpoint_model import load_checkpoint_model
    from itra_train.demo import train_demo

    return load_checkpoint_model(Path(train_demo()))


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder("demo", build_demo, example="demo | demo:random",
                         description="tiny CLIP trained on digits at first use (demo:random: "
                                     "untrained)")]
