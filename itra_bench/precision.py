"""The ``--precision`` of a run: its names, the devices each runs on, and the autocast of
forward passes it stands for. One rule for ``itra-bench`` (evaluation) and ``itra-train``
(training, and the evaluation during training).

torch is imported only when an autocast context is made for a mixed precision: the quick
commands read the names from here.
"""

from __future__ import annotations

import contextlib
import difflib
from typing import TYPE_CHECKING, Any

from itra_bench.errors import UserError

if TYPE_CHECKING:
    import torch

#: The precisions a run takes (``--precision``): float32, or autocast to bfloat16 / float16.
PRECISIONS = ("fp32", "amp_bf16", "amp_fp16")
#: Old spellings of precisions, still accepted (itra-train once called float16 ``amp``).
PRECISION_ALIASES = {"amp": "amp_fp16"}


def precision_name(text: str) -> str:
    """Today's name of a ``--precision`` value (an old spelling is renamed); an unknown one is
    a ``ValueError`` listing the valid names."""
    name = PRECISION_ALIASES.get(text, text)
    if name not in PRECISIONS:
        close = difflib.get_close_matches(str(text), PRECISIONS, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown precision {text!r}; choose one of {', '.join(PRECISIONS)}."
                         f"{hint}")
    return name


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a ``--precision`` that ``device`` cannot run (one rule for ``itra-bench run``
    and ``itra-train``)."""
    # float16 autocast (and training's gradient scaler) is a CUDA feature: on CPU it is
    # unsupported or far slower than the bfloat16 CPUs do have.
    if precision == "amp_fp16" and device.type == "cpu":
        raise UserError("--precision amp_fp16 needs a CUDA device; use amp_bf16 or fp32 on "
                        "CPU")


def precision_autocast(precision: str, device: torch.device | str
                       ) -> contextlib.AbstractContextManager[Any]:
    """The mixed-precision context of forward passes on ``device`` at ``precision``: none
    for fp32, else torch's autocast to bfloat16 (``amp_bf16``) or float16 (``amp_fp16``)."""
    name = precision_name(precision)
    if name == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if name == "amp_bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
