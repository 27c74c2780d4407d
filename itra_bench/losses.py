"""The loss contract: a named factory of training objectives, contributed by plugins."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from itra_bench.errors import PluginBugError, UserError
from itra_bench.lazy_import import LazyFactory

if TYPE_CHECKING:
    from torch import nn

    from itra_bench.registry import PluginInfo

#: ``LossSpec.direction``: the objective is symmetric (image to text and text to image).
BIDIRECTIONAL = "bidirectional"
#: ``LossSpec.direction``: the student is pulled towards a frozen teacher, one way.
STUDENT_TO_TEACHER = "student-to-teacher"
#: The keywords the trainer itself passes to every factory (never ``--loss-options``).
TRAINER_KEYWORDS = ("student_dim", "teacher_dim", "prototypes")


@dataclass(frozen=True)
class LossSpec:
    """A training objective a plugin provides.

    **Construction.** ``factory(student_dim=Ds, teacher_dim=Dt, prototypes=K, **options)``
    returns an ``nn.Module``. The trainer always passes the three keywords; a factory names
    those it uses and takes the rest with ``**kwargs`` (``K`` is 0 unless the model has a
    prototype layer). ``options`` are the user's ``itra-train --loss-options KEY=VALUE``; a
    key must be a named parameter of the factory (for a class, of its ``__init__``), so a
    misspelt option is refused instead of silently keeping the default: ``**kwargs`` absorbs
    the trainer's keywords, never an option. (A factory *function* taking ``**kwargs``
    forwards them: its options are checked against the ``__init__`` of the class it built.)
    ``factory`` may be the class (or function) itself or a :class:`LazyFactory` naming it by
    module and attribute: plugins are loaded by every ``itra-bench`` command, ``list`` and
    ``--help`` included, and a lazy factory keeps torch (and the loss module) unimported
    until ``itra-train`` builds the loss.
    A loss may own parameters (a prediction head) and buffers (queues, centres): the trainer
    optimises and checkpoints them with the model.

    **Call.** ``loss(student, teacher, logit_scale)`` returns a scalar tensor, or a dict of
    named scalar terms that the trainer sums (and logs one by one). A loss whose ``needs``
    include ``prototypes`` is called with two more keywords,
    ``loss(student, teacher, logit_scale, *, student_prototypes, teacher_prototypes)``; no
    other loss receives them, so a minimal loss is ``forward(self, student, teacher,
    logit_scale)``.

    - ``student`` ``[B, Ds]``: features of the tower being trained (unnormalised; a loss
      normalises where its definition says so).
    - ``teacher`` ``[B, Dt]``: what the student is aligned to, row ``i`` paired with student
      row ``i``. In knowledge distillation (``itra-train --teacher SPEC``) these are a frozen
      teacher's features, computed without gradients. Without a teacher, the student is the
      image tower and the teacher the text tower, and a bidirectional loss trains both.
    - ``logit_scale``: the learnable temperature ``exp(t)``, always passed; it is trained only
      for losses whose ``needs`` include ``logit_scale``.
    - ``student_prototypes`` / ``teacher_prototypes`` ``[B, K]``: the prototype layer's
      outputs (logits) for each side (``prototypes`` losses only).

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
    factory: Callable[..., nn.Module]  # the class, a function, or a LazyFactory
    description: str = ""
    paper: str = ""
    needs: tuple[str, ...] = ()
    direction: str = BIDIRECTIONAL


def _real(factory: Callable[..., Any]) -> Callable[..., Any]:
    """``factory`` itself, or the class or function a :class:`LazyFactory` names."""
    return factory.resolve() if isinstance(factory, LazyFactory) else factory


def _parameters(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """The keyword-passable parameter names of ``fn`` (a class: its ``__init__``) and whether
    it takes ``**kwargs``."""
    try:
        params = inspect.signature(_real(fn)).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return set(), True
    named = {p.name for p in params
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def _refuse_trainer_keywords(options: Iterable[str]) -> None:
    for key in options:
        if key in TRAINER_KEYWORDS:
            raise UserError(f"--loss-options {key}: {key} is set by itra-train from the model "
                            f"(as are {', '.join(k for k in TRAINER_KEYWORDS if k != key)}); "
                            "remove it")


def _check_options(spec: LossSpec, options: Iterable[str], accepted: set[str]) -> None:
    known = sorted(accepted - set(TRAINER_KEYWORDS))
    for key in options:
        if key in accepted:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listed = f"its options: {', '.join(known)}" if known else "it takes no options"
        raise UserError(f"--loss-options {key}: loss {spec.name!r} has no option {key!r}.{hint} "
                        f"({listed})")


def _forwards(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` is a function passing its ``**kwargs`` on (to the class it builds)."""
    factory = _real(factory)
    return _parameters(factory)[1] and not isinstance(factory, type)


def check_options(spec: LossSpec, options: dict[str, Any]) -> None:
    """Refuse ``--loss-options`` keys the factory does not name, suggesting the close match
    (before anything is built; see :class:`LossSpec`, *Construction*)."""
    _refuse_trainer_keywords(options)
    if not _forwards(spec.factory):
        _check_options(spec, options, _parameters(spec.factory)[0])


def check_factory(spec: LossSpec, plugin: PluginInfo) -> None:
    """Refuse, as the bug of ``plugin``, a factory that cannot take the keywords the trainer
    always passes (see :class:`LossSpec`, *Construction*)."""
    named, takes_kwargs = _parameters(spec.factory)
    missing = [k for k in TRAINER_KEYWORDS if k not in named]
    if missing and not takes_kwargs:
        raise PluginBugError(
            f"plugin bug: the factory of loss {spec.name!r} of {plugin.describe()}, module "
            f"{plugin.module}, does not accept {', '.join(missing)}: itra-train calls every "
            f"loss factory with the keywords {', '.join(k + '=' for k in TRAINER_KEYWORDS)}, "
            "so it must name them or take **kwargs (see itra_bench.losses.LossSpec). Report "
            "it to the plugin's authors.")


def build_loss(spec: LossSpec, student_dim: int, teacher_dim: int, prototypes: int,
               options: dict[str, Any]) -> nn.Module:
    """The loss module of ``spec`` for these widths, with the user's ``options`` checked
    against the factory's parameters (see :class:`LossSpec`, *Construction*)."""
    check_options(spec, options)
    loss = spec.factory(student_dim=student_dim, teacher_dim=teacher_dim,
                        prototypes=prototypes, **options)
    if _forwards(spec.factory):
        named = _parameters(spec.factory)[0] | _parameters(type(loss))[0]
        _check_options(spec, options, named)
    return loss
