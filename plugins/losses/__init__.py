"""Built-in training objectives, one small class per objective.

- :mod:`.alignment`: image-text alignment (InfoNCE, ProtoCLIP).
- :mod:`.distillation`: knowledge distillation from a frozen teacher.
- :mod:`.self_supervised`: self-supervised objectives applied across the image and text views.

The contract every loss follows is :class:`itra_bench.losses.LossSpec`'s docstring.

Every ``itra-bench`` command loads this plugin, ``list`` and ``--help`` included, so the
specs below name their classes through :class:`itra_bench.losses.LazyFactory`: the loss
modules (and torch) are imported only when ``itra-train`` builds a loss.
"""

from __future__ import annotations

from itra_bench import hookimpl
from itra_bench.losses import BIDIRECTIONAL, STUDENT_TO_TEACHER, LazyFactory, LossSpec

_ALIGNMENT = f"{__name__}.alignment"
_DISTILLATION = f"{__name__}.distillation"
_SELF_SUPERVISED = f"{__name__}.self_supervised"

SPECS: list[LossSpec] = [
    # alignment
    LossSpec("infonce", LazyFactory(_ALIGNMENT, "InfoNCE"),
             description="CLIP symmetric contrastive loss",
             paper="Radford et al. 2021", needs=("logit_scale",), direction=BIDIRECTIONAL),
    LossSpec("protoclip", LazyFactory(_ALIGNMENT, "ProtoCLIP"),
             description="InfoNCE + prototype-level discrimination with episodic k-means "
                         "prototypes and prototypical back translation",
             paper="Chen et al. 2022, Prototypical Contrastive Language Image Pretraining",
             needs=("logit_scale",), direction=BIDIRECTIONAL),
    # distillation
    LossSpec("rkd", LazyFactory(_DISTILLATION, "RKD"),
             description="relational KD: distance-wise (x25) + angle-wise (x50) Huber losses "
                         "between student and teacher relations; widths may differ",
             paper="Park et al. 2019", direction=BIDIRECTIONAL),
    LossSpec("seed", LazyFactory(_DISTILLATION, "SEED"),
             description="SEED: cross-entropy of teacher vs student similarity distributions "
                         "over [own teacher feature, queue of 65536 teacher features]",
             paper="Fang et al. 2021", direction=STUDENT_TO_TEACHER),
    LossSpec("compress-1q", LazyFactory(_DISTILLATION, "CompRess1q"),
             description="CompRess, one queue: KL between teacher and student similarity "
                         "distributions over one queue of teacher features",
             paper="Abbasi Koohpayegani et al. 2020", direction=STUDENT_TO_TEACHER),
    LossSpec("compress-2q", LazyFactory(_DISTILLATION, "CompRess2q"),
             description="CompRess, two queues: KL between teacher (vs teacher queue) and "
                         "student (vs student queue) similarity distributions; widths may differ",
             paper="Abbasi Koohpayegani et al. 2020", direction=BIDIRECTIONAL),
    LossSpec("protocpc", LazyFactory(_DISTILLATION, "ProtoCPC"),
             description="ProtoCPC: prototypical contrastive predictive coding on prototype "
                         "outputs, with an EMA prior over prototypes",
             paper="Lee 2022", needs=("prototypes",), direction=STUDENT_TO_TEACHER),
    LossSpec("simreg", LazyFactory(_DISTILLATION, "SimReg"),
             description="SimReg: a prediction MLP on the student regresses the L2-normalised "
                         "teacher features (MSE); widths may differ",
             paper="Navaneet et al. 2022", direction=STUDENT_TO_TEACHER),
    # self-supervised
    LossSpec("vicreg", LazyFactory(_SELF_SUPERVISED, "VICReg"),
             description="variance-invariance-covariance regularisation between the two views",
             paper="Bardes et al. 2022, VICReg", direction=BIDIRECTIONAL),
    LossSpec("barlowtwins", LazyFactory(_SELF_SUPERVISED, "BarlowTwins"),
             description="cross-correlation of the two views driven to the identity",
             paper="Zbontar et al. 2021, Barlow Twins", direction=BIDIRECTIONAL),
    LossSpec("dino", LazyFactory(_SELF_SUPERVISED, "DINO"),
             description="self-distillation: student prototype scores to the centred, sharpened "
                         "teacher's",
             paper="Caron et al. 2021, Emerging Properties in Self-Supervised Vision "
                   "Transformers",
             needs=("prototypes",), direction=STUDENT_TO_TEACHER),
]


@hookimpl
def itra_bench_losses() -> list[LossSpec]:
    return list(SPECS)
