"""The ``demo`` model: a tiny OpenCLIP-architecture dual encoder that needs no download.

Its weights are a fixed, seeded random initialisation (seed 0) until the trainer gives it
trained ones, so its scores on the demo suite are those of an untrained model: the demo
shows the pipeline, not a good model. That is why ``demo`` needs no ``--random-init``.
"""

from __future__ import annotations

import open_clip
import torch

from itra_bench import hookimpl
from itra_bench.fingerprint import fingerprint
from itra_bench.model import IMAGE, TEXT, EncoderModel, ModelBuilder, ModelOptions

#: The architecture, in open_clip's model-config format.
DEMO_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
                   "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 2, "mlp_ratio": 2.0},
}
DEMO_SEED = 0


class DemoModel(EncoderModel):
    """open_clip's CLIP class at the demo's tiny size, with its tokenizer and transform."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(DEMO_SEED)
            self.clip = open_clip.CLIP(**DEMO_CONFIG)
        self.clip.eval()
        image_size = DEMO_CONFIG["vision_cfg"]["image_size"]
        self.image_transform = open_clip.image_transform(image_size, is_train=False)
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(
            context_length=DEMO_CONFIG["text_cfg"]["context_length"])
        self.modalities = frozenset({IMAGE, TEXT})
        self.fingerprint = fingerprint({"builder": "demo", "config": DEMO_CONFIG,
                                        "random_init": True, "seed": DEMO_SEED})

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return self.clip.encode_text(self.tokenizer(texts).to(self.device))


def build_demo(rest: str, options: ModelOptions) -> DemoModel:
    """The demo model (``rest`` must be empty)."""
    from itra_bench.errors import UserError

    if rest:
        raise UserError(f"the demo model takes no argument (got 'demo:{rest}'); use --model demo")
    return DemoModel()


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder("demo", build_demo, example="demo",
                         description="tiny OpenCLIP-style model, seeded random weights")]
