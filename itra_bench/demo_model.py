"""The demo architecture: a tiny OpenCLIP-architecture dual encoder that needs no download.

The ``demo`` model scheme itself comes from the trainer's plugin (``itra_train.plugin``):
``demo`` is this architecture trained on scikit-learn's digits at first use, and
``demo:random`` is :func:`build_random_demo`, the same architecture with a fixed, seeded
random initialisation (seed 0), for exercising the pipeline without any training.
"""

from __future__ import annotations

import json

from itra_bench.fingerprint import fingerprint
from itra_bench.plugins.openclip_models import PACKAGED_CONFIGS, OpenCLIPEncoder
from itra_bench.weights import random_init_config, seeded_init

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
