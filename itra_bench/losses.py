"""The loss contract: a named factory of training objectives, contributed by plugins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

#: LossSpec.direction values.
BIDIRECTIONAL = "bidirectional"
STUDENT_TO_TEACHER = "student-to-teacher"


@dataclass(frozen=True)
class LossSpec:
    """A training objective a plugin provides.

    **Construction.** ``factory(student_dim=Ds, teacher_dim=Dt, prototypes=K)`` returns an
    ``nn.Module``; a factory takes the keywords it needs and ignores the rest (``**kwargs``).
    ``K`` is 0 unless the model has a prototype layer. A loss may own parameters (a
    prediction head) and buffers (queues, centres): the trainer optimises and checkpoints them
    with the model.

    **Call.** ``loss(student, teacher, logit_scale, *, student_prototypes=None,
    teacher_prototypes=None)`` returns a scalar tensor, or a dict of named scalar terms that
    the trainer sums (and logs one by one).

    - ``student`` ``[B, Ds]``: features of the tower being trained (unnormalised; a loss
      normalises where its definition says so).
    - ``teacher`` ``[B, Dt]``: what the student is aligned to, row ``i`` paired with student
      row ``i``. In knowledge distillation (``itra-train --teacher SPEC``) these are a frozen
      teacher's features, computed without gradients. Without a teacher, the student is the
      image tower and the teacher the text tower, and a bidirectional loss trains both.
    - ``logit_scale``: the learnable temperature ``exp(t)`` (for losses with ``needs``
      ``logit_scale``).
    - ``student_prototypes`` / ``teacher_prototypes`` ``[B, K]``: the prototype layer's
      outputs (logits) for each side, for losses that need ``prototypes``.

    The batch is the **global** batch (every process's rows, identical on all processes), so a
    loss never communicates itself, and buffers updated from the batch stay identical across
    processes. A ``student-to-teacher`` (uni-directional) loss must let no gradient reach
    ``teacher`` or ``teacher_prototypes`` (detach them).

    ``needs`` names what the loss consumes: ``logit_scale``, ``prototypes`` (a head with a
    prototype layer), ``teacher`` (a frozen teacher model, ``--teacher``); the trainer refuses
    to start when the model cannot provide it. ``direction`` is :data:`BIDIRECTIONAL` or
    :data:`STUDENT_TO_TEACHER`.
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    paper: str = ""
    needs: tuple[str, ...] = ()
    direction: str = BIDIRECTIONAL
