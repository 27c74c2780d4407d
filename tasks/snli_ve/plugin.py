"""SNLI-VE visual entailment (Xie et al. 2019) with frozen embeddings: is a text hypothesis
entailed by, neutral to or contradicted by an image? Suite ``snli-ve``.

- ``snli-ve-zeroshot``: cosine similarity of image and hypothesis, cut into three classes by
  two thresholds chosen on the dev split (``itra_bench.tasks.snli_ve.entailment``), scored on test.
- ``snli-ve-transfer``: TAP-C's cross-modal transfer (Song et al. 2022): an MLP trained on the
  train split with the *caption* premise (``sentence1``) and the hypothesis, its epoch chosen
  on dev (caption premises too: no image is seen before testing), then applied on test with
  the *image* embedding as the premise. ``text_premise_acc1`` scores the same classifier
  on test with caption premises, the within-modality reference.

Metrics: ``acc1`` (main), ``recall_<class>`` per class, ``mean_per_class_recall``.

Data, as the SNLI-VE generator (necla-ml/SNLI-VE) writes it: ``snli_ve_{train,dev,test}.jsonl``,
one SNLI record per line with ``Flickr30K_ID``, ``sentence1`` (the Flickr30k caption the
hypothesis was written for), ``sentence2`` (the hypothesis) and ``gold_label``
(``entailment`` | ``neutral`` | ``contradiction``; SNLI's ``-``, no majority label, is skipped
and counted, as the generator itself drops such lines); images ``<images>/<Flickr30K_ID>.jpg``.
Task files (``task_type: snli_ve_zeroshot`` or ``snli_ve_transfer``) name their own ``train``,
``dev``, ``test`` and ``images`` paths, relative to ``--data-root``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench import hookimpl
from itra_bench.context import RunContext
from itra_bench.datasets.image_source import ImageFiles
from itra_bench.datasets.text_files import iter_lines
from itra_bench.errors import MissingDataError, UserError
from itra_bench.fingerprint import files_identity
from itra_bench.metric_names import Metric
from itra_bench.model_api import IMAGE, TEXT
from itra_bench.task import Task, TaskResult
from itra_bench.task_fields import build, file_key, not_from_file, read_keys
from itra_bench.tasks import load_cards
from itra_bench.tasks.snli_ve.entailment_config import TransferConfig

if TYPE_CHECKING:
    import torch

    from itra_bench.model import EncoderModel
    from itra_bench.tasks.snli_ve.entailment import PairFeatures

#: This benchmark's YAML cards: its built-in tasks.
CARDS_DIR = Path(__file__).parent / "cards"
METHODS = {"snli_ve_zeroshot": "zeroshot", "snli_ve_transfer": "transfer"}
LAYOUT = ("{train}{dev}, {test}: SNLI-VE JSONL, one pair a line with 'Flickr30K_ID', "
          "'sentence1' (caption premise), 'sentence2' (hypothesis), 'gold_label' "
          "(entailment|neutral|contradiction); images at {images}/<Flickr30K_ID>.jpg")


@dataclass
class EntailmentSplit:
    """The labelled pairs of one SNLI-VE file, in file order."""

    path: Path
    image_ids: list[str] = field(default_factory=list)
    premises: list[str] = field(default_factory=list)
    hypotheses: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    unlabelled: int = 0

    def __len__(self) -> int:
        return len(self.labels)


def read_snli_ve(path: Path) -> EntailmentSplit:
    """Read an ``snli_ve_<split>.jsonl`` file; bad lines are a UserError naming the line."""
    from itra_bench.tasks.snli_ve.entailment import LABELS

    if not path.is_file():
        raise MissingDataError(f"SNLI-VE file not found: {path}")
    split = EntailmentSplit(path)
    label_index = {name: i for i, name in enumerate(LABELS)}
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}, line {line_no}: not valid JSON ({exc.msg}); each "
                            "line must be one SNLI-VE record") from None
        except (RecursionError, ValueError) as exc:  # too deep; a 5,000-digit integer
            raise UserError(f"{path}, line {line_no}: not valid JSON ({exc}); each line "
                            "must be one SNLI-VE record") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}, line {line_no}: expected a JSON object")
        missing = [k for k in ("Flickr30K_ID", "sentence1", "sentence2", "gold_label")
                   if k not in record]
        if missing:
            raise UserError(f"{path}, line {line_no}: missing key(s) {missing}; SNLI-VE "
                            "records have Flickr30K_ID, sentence1, sentence2, gold_label")
        label = record["gold_label"]
        if label == "-":
            split.unlabelled += 1
            continue
        if not isinstance(label, str) or label not in label_index:
            raise UserError(f"{path}, line {line_no}: gold_label {label!r:.60} is not one of "
                            f"{', '.join(LABELS)} (or '-', skipped)")
        image_id = record["Flickr30K_ID"]
        # An id names the image file <id>.jpg: a string or a non-negative integer.
        if isinstance(image_id, bool) or not isinstance(image_id, (str, int)) \
                or not str(image_id).strip() or "\0" in str(image_id):
            raise UserError(f"{path}, line {line_no}: Flickr30K_ID {image_id!r:.60} is not an "
                            "image id (a string or an integer naming <images>/<id>.jpg)")
        for key in ("sentence1", "sentence2"):
            if not isinstance(record[key], str):
                raise UserError(f"{path}, line {line_no}: {key} must be a string, got "
                                f"{type(record[key]).__name__}")
        split.image_ids.append(str(image_id))
        split.premises.append(record["sentence1"])
        split.hypotheses.append(record["sentence2"])
        split.labels.append(label_index[label])
    if not split.labels:
        raise UserError(f"{path}: no labelled pair (entailment, neutral or contradiction)")
    return split


class SplitImages(ImageFiles):
    """The distinct images of a split, in order of first use; ``row_of_pair[k]`` is the image
    of pair ``k``."""

    def __init__(self, split: EntailmentSplit, image_root: Path) -> None:
        order: dict[str, int] = {}
        self.row_of_pair = [order.setdefault(i, len(order)) for i in split.image_ids]
        self.paths = [image_root / f"{image_id}.jpg" for image_id in order]
        self.identity = "snli-ve:" + files_identity(self.paths, salt=str(split.path.resolve()))


def _index(texts: list[str]) -> tuple[list[str], torch.Tensor]:
    """Distinct texts (first-use order) and, per input, its row among them."""
    import torch

    order: dict[str, int] = {}
    rows = [order.setdefault(t, len(order)) for t in texts]
    return list(order), torch.tensor(rows, dtype=torch.long)


@dataclass
class _ImagePairs:
    """A split's pairs whose image decoded, with image features as the premise table."""

    pairs: PairFeatures
    labels: torch.Tensor
    skipped: list[str]


@dataclass(kw_only=True)
class SnliVeTask(Task):
    """SNLI-VE under the ``zeroshot`` (dev-chosen thresholds) or ``transfer`` (TAP-C) method.

    A task file of task type ``snli_ve_transfer`` also sets the keys of ``transfer``
    (:class:`TransferConfig`); one of ``snli_ve_zeroshot`` reads no ``train`` split.
    """

    method: str = not_from_file("zeroshot")
    train: str = file_key("snli_ve/snli_ve_train.jsonl",
                          help="transfer: the train split's JSONL (caption premises)",
                          required=True)
    dev: str = file_key(help="the dev split's JSONL")
    test: str = file_key(help="the test split's JSONL")
    images: str = file_key(help="the folder of the images, <Flickr30K_ID>.jpg")
    transfer: TransferConfig = not_from_file(default_factory=TransferConfig)

    def __post_init__(self) -> None:
        if self.method not in ("zeroshot", "transfer"):
            raise ValueError(f"method must be zeroshot or transfer, got {self.method!r}")
        self.protocol = f"snli_ve_{self.method}"
        self.main_score = "acc1"
        self.modalities = frozenset({IMAGE, TEXT})
        train = f"{self.train} (train), " if self.method == "transfer" else ""
        self.layout = LAYOUT.format(train=train, dev=f"{self.dev} (dev)",
                                    test=f"{self.test} (test)", images=self.images)

    def _files(self) -> list[str]:
        files = [self.dev, self.test]
        return [self.train, *files] if self.method == "transfer" else files

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        return [Path(data_root) / f for f in [*self._files(), self.images]]

    def _read(self, ctx: RunContext, file: str) -> EntailmentSplit:
        return read_snli_ve(Path(ctx.data_root) / file)

    def _hypothesis_table(self, model: EncoderModel, ctx: RunContext, split: EntailmentSplit,
                          name: str) -> tuple[torch.Tensor, torch.Tensor]:
        from itra_bench.encoding import encode_texts

        texts, rows = _index(split.hypotheses)
        return encode_texts(model, texts, ctx, f"encode {name} hypotheses"), rows

    def _image_pairs(self, model: EncoderModel, ctx: RunContext, split: EntailmentSplit,
                     name: str, hypotheses: torch.Tensor, hyp_rows: torch.Tensor
                     ) -> _ImagePairs:
        """Pairs with the image as premise; pairs of images skipped as corrupt are dropped."""
        import torch

        from itra_bench.encoding import encode_images
        from itra_bench.tasks.snli_ve.entailment import PairFeatures

        source = SplitImages(split, Path(ctx.data_root) / self.images)
        enc = encode_images(model, source, ctx, split=f"snli-ve/{name}")
        feature_row = {int(old): new for new, old in enumerate(enc.indices.tolist())}
        keep = [k for k, img in enumerate(source.row_of_pair) if img in feature_row]
        premise_rows = torch.tensor([feature_row[source.row_of_pair[k]] for k in keep],
                                    dtype=torch.long)
        keep_t = torch.tensor(keep, dtype=torch.long)
        pairs = PairFeatures(enc.features, hypotheses, premise_rows, hyp_rows[keep_t])
        labels = torch.tensor(split.labels, dtype=torch.long)[keep_t]
        return _ImagePairs(pairs, labels, enc.skipped)

    def _text_pairs(self, model: EncoderModel, ctx: RunContext, split: EntailmentSplit,
                    name: str, hypotheses: torch.Tensor, hyp_rows: torch.Tensor
                    ) -> PairFeatures:
        from itra_bench.encoding import encode_texts
        from itra_bench.tasks.snli_ve.entailment import PairFeatures

        texts, rows = _index(split.premises)
        premises = encode_texts(model, texts, ctx, f"encode {name} caption premises")
        return PairFeatures(premises, hypotheses, rows, hyp_rows)

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        splits = {"dev": self._read(ctx, self.dev), "test": self._read(ctx, self.test)}
        if self.method == "transfer":
            splits["train"] = self._read(ctx, self.train)
        hyps = {name: self._hypothesis_table(model, ctx, s, name) for name, s in splits.items()}
        details: dict[str, Any] = {
            f"num_{name}_pairs": len(s) for name, s in splits.items()}
        unlabelled = {name: s.unlabelled for name, s in splits.items() if s.unlabelled}
        if unlabelled:
            details["skipped_unlabelled"] = unlabelled
        evaluate = self._zeroshot if self.method == "zeroshot" else self._transfer
        metrics, num_scored, skipped = evaluate(model, ctx, splits, hyps, details)
        if skipped:
            details["skipped_corrupt"] = skipped
        return TaskResult(metrics, self.main_score, num_scored, details)

    def _zeroshot(self, model: EncoderModel, ctx: RunContext,
                  splits: dict[str, EntailmentSplit],
                  hyps: dict[str, tuple[torch.Tensor, torch.Tensor]], details: dict[str, Any]
                  ) -> tuple[dict[str, float], int, list[str]]:
        from itra_bench.tasks.snli_ve.entailment import (
            apply_thresholds,
            choose_thresholds,
            entailment_metrics,
            pair_similarities,
        )

        scored = {}
        for name in ("dev", "test"):
            ip = self._image_pairs(model, ctx, splits[name], name, *hyps[name])
            p = ip.pairs
            sims = pair_similarities(p.premises[p.premise_index], p.hypotheses[p.hypothesis_index])
            scored[name] = (sims, ip.labels, ip.skipped)
        # The thresholds see dev only; test is scored once with them.
        thresholds = choose_thresholds(scored["dev"][0], scored["dev"][1])
        test_sims, test_labels, _ = scored["test"]
        metrics = entailment_metrics(apply_thresholds(test_sims, thresholds.low,
                                                      thresholds.high), test_labels)
        metrics["dev_acc1"] = thresholds.accuracy
        details.update(thresholds.as_details(),
                       threshold_search="t_lo <= t_hi over the distinct dev similarities and "
                                        "+inf, exhaustive, maximising dev accuracy")
        return metrics, len(test_labels), [*scored["dev"][2], *scored["test"][2]]

    def _transfer(self, model: EncoderModel, ctx: RunContext,
                  splits: dict[str, EntailmentSplit],
                  hyps: dict[str, tuple[torch.Tensor, torch.Tensor]], details: dict[str, Any]
                  ) -> tuple[dict[str, float], int, list[str]]:
        import torch

        from itra_bench.tasks.snli_ve.entailment import (
            entailment_metrics,
            predict,
            train_transfer_classifier,
        )

        text = {name: self._text_pairs(model, ctx, splits[name], name, *hyps[name])
                for name in ("train", "dev", "test")}
        labels = {name: torch.tensor(s.labels, dtype=torch.long) for name, s in splits.items()}
        trained = train_transfer_classifier(text["train"], labels["train"], text["dev"],
                                            labels["dev"], self.transfer, seed=ctx.seed,
                                            device=ctx.device)
        test = self._image_pairs(model, ctx, splits["test"], "test", *hyps["test"])
        metrics = entailment_metrics(predict(trained.classifier, test.pairs), test.labels)
        metrics["text_premise_acc1"] = entailment_metrics(
            predict(trained.classifier, text["test"]), labels["test"])["acc1"]
        metrics["dev_text_premise_acc1"] = trained.dev_accuracy
        details.update(best_epoch=trained.best_epoch,
                       train_loss=[round(x, 6) for x in trained.train_loss],
                       dev_text_premise_accuracies=trained.dev_accuracies,
                       classifier=vars(self.transfer).copy(),
                       fusion="[p, h, p+h, p-h, p*h] of L2-normalised embeddings")
        return metrics, len(test.labels), test.skipped


def snli_ve_task(doc: dict[str, Any], path: Path) -> Task:
    """Task-file factory of the task types ``snli_ve_zeroshot`` and ``snli_ve_transfer``."""
    protocol = doc["task_type"]
    method = METHODS[protocol]
    what = f"task type {protocol}"
    if method == "zeroshot":
        return build(SnliVeTask, read_keys(SnliVeTask, doc, path, what, omit={"train"}),
                     method=method)
    values = read_keys((SnliVeTask, TransferConfig), doc, path, what)
    for key in ("hidden_dim", "epochs", "batch_size"):
        if values[key] < 1:
            raise UserError(f"{path}: key {key!r} must be a positive integer")
    for key in ("lr", "weight_decay"):
        if values[key] < 0:
            raise UserError(f"{path}: key {key!r} must not be negative")
    return build(SnliVeTask, values, method=method, transfer=build(TransferConfig, values))


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return load_cards(CARDS_DIR, dict.fromkeys(METHODS, snli_ve_task))


@hookimpl
def itra_bench_task_file_protocols() -> dict[str, Callable[[dict[str, Any], Path], Task]]:
    return dict.fromkeys(METHODS, snli_ve_task)


@hookimpl
def itra_bench_metrics() -> list[Metric]:
    # acc1 and mean_per_class_recall are the shared protocols' (itra-bench declares them).
    # The classes are entailment.LABELS, spelled out: that module imports torch.
    return [
        *(Metric(f"recall_{label}", f"the share of the {label} pairs predicted {label}")
          for label in ("entailment", "neutral", "contradiction")),
        Metric("dev_acc1", "zero-shot: top-1 accuracy on the dev split of the thresholds "
               "chosen there"),
        Metric("text_premise_acc1", "transfer: top-1 accuracy of the classifier given the "
               "text premise in place of the image"),
        Metric("dev_text_premise_acc1", "transfer: text_premise_acc1 on the dev split"),
    ]
