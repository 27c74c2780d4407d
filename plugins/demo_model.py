"""The ``demo`` model: a tiny OpenCLIP-architecture dual encoder that needs no download.

Its weights are a fixed, seeded random initialisation (seed 0) until the trainer gives it
trained ones, so its scores on the demo suite are those of an untrained model: the demo
shows the pipeline, not a good model. That is why ``demo`` needs no ``--random-init``.
"""

from __future__ import annotations

from itra_bench import hookimpl
from itra_bench.errors import UserError
from itra_bench.fingerprint import fingerprint
from itra_bench.model import ModelBuilder, ModelOptions
from itra_bench.weights import random_init_config, seeded_init

from .openclip_models import OpenCLIPEncoder

#: The architecture, in open_clip's model-config format.
DEMO_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
                   "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 2, "mlp_ratio": 2.0},
}
DEMO_SEED = 0


def build_demo(rest: str, options: ModelOptions) -> OpenCLIPEncoder:
    """The demo model (``rest`` must be empty), built identically on every call."""
    import open_clip  # imported here: listing plugins should not pay for it

    if rest:
        raise UserError(f"the demo model takes no argument (got 'demo:{rest}'); use --model demo")
    with seeded_init(DEMO_SEED):
        clip = open_clip.CLIP(**DEMO_CONFIG).eval()
    tokenizer = open_clip.tokenizer.SimpleTokenizer(
        context_length=DEMO_CONFIG["text_cfg"]["context_length"])
    transform = open_clip.image_transform(DEMO_CONFIG["vision_cfg"]["image_size"], is_train=False)
    fp = fingerprint({"builder": "demo", "config": DEMO_CONFIG, **random_init_config(DEMO_SEED)})
    return OpenCLIPEncoder(clip, tokenizer, transform, fp)
@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder("demo", build_demo, example="demo",
                         description="tiny OpenCLIP-style model, seeded random weights")]
