"""Zero-shot classification with prompt-template ensembles (as in CLIP and clip-benchmark)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from itra_bench.protocols.classification_metrics import classification_metrics
from itra_bench.protocols.templates import fill_template  # noqa: F401 (re-exported)


def build_zeroshot_classifier(
    encode_texts: Callable[[list[str]], Tensor],
    classnames: Sequence[str],
    templates: Sequence[str] | Mapping[str, Sequence[str]],
) -> Tensor:
    """Class embeddings ``[C, D]`` for zero-shot classification, one unit-norm row per class.

    Each class's prompts are embedded, each prompt embedding is L2-normalised, the embeddings
    are averaged, and the average is L2-normalised again. ``templates`` is either a list of
    templates shared by all classes (see :func:`fill_template`) or a mapping from class name
    to that class's own finished prompts (class-specific prompts such as CuPL's, as
    clip-benchmark accepts). ``encode_texts`` is called once with all prompts of all classes,
    class by class in order, and must return one row per prompt; it is expected to batch
    internally. The result is float32 on the device ``encode_texts`` returned.
    """
    if len(classnames) == 0:
        raise ValueError("zero-shot classification needs at least one class name")
    if isinstance(templates, Mapping):
        missing = [c for c in classnames if c not in templates]
        if missing:
            raise ValueError(
                f"class-specific prompts are missing for {len(missing)} classes, e.g. {missing[:3]}"
            )
        prompts_per_class = [list(templates[c]) for c in classnames]
    else:
        if isinstance(templates, str):
            raise ValueError("templates must be a list of template strings, not one string")
        prompts_per_class = [[fill_template(t, c) for t in templates] for c in classnames]
    empty = [c for c, prompts in zip(classnames, prompts_per_class, strict=True) if not prompts]
    if empty:
        raise ValueError(f"no prompts for {len(empty)} classes, e.g. {empty[:3]}")

    prompts = [p for class_prompts in prompts_per_class for p in class_prompts]
    embeddings = encode_texts(prompts)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(prompts):
        raise ValueError(
            f"encode_texts returned shape {tuple(embeddings.shape)} for {len(prompts)} prompts; "
            "expected one row per prompt"
        )
    # Average in float32 even when the text tower runs in half precision.
    embeddings = F.normalize(embeddings.detach().float(), dim=-1)
    counts = [len(class_prompts) for class_prompts in prompts_per_class]
    class_means = torch.stack([chunk.mean(dim=0) for chunk in embeddings.split(counts)])
    return F.normalize(class_means, dim=-1)


def zeroshot_scores(
    image_features: Tensor, classifier: Tensor, device: torch.device | str = "cpu"
) -> Tensor:
    """Cosine scores ``[N, C]``: L2-normalised image features times the classifier rows.

    ``classifier`` (``[C, D]``, e.g. from :func:`build_zeroshot_classifier`) is used as given,
    not re-normalised. The result is float32 on ``device``.
    """
    if image_features.ndim != 2 or classifier.ndim != 2:
        raise ValueError(
            f"image_features must be [N, D] and classifier [C, D], got shapes "
            f"{tuple(image_features.shape)} and {tuple(classifier.shape)}"
        )
    if image_features.shape[1] != classifier.shape[1]:
        raise ValueError(
            f"image features have dimension {image_features.shape[1]} but the classifier has "
            f"{classifier.shape[1]}: the image and text towers do not share an embedding space"
        )
    images = F.normalize(image_features.to(device=device, dtype=torch.float32), dim=-1)
    return images @ classifier.to(device=device, dtype=torch.float32).T


def zeroshot_classification(
    image_features: Tensor,
    classifier: Tensor,
    labels: Tensor,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Zero-shot classification metrics (see :func:`classification_metrics`).

    Scores are :func:`zeroshot_scores`; the keys are ``acc1``, ``acc5`` (when there are at
    least five classes) and ``mean_per_class_recall``.
    """
    scores = zeroshot_scores(image_features, classifier, device)
    return classification_metrics(scores, labels)
