"""Training settings: yacs defaults, a YAML file (``--config``) and command-line overrides.

Every setting has one name, used as the YAML key and, with ``-`` for ``_``, as the flag
(``image_tower`` / ``--image-tower``). Values come from the defaults below, then the YAML
file, then the flags given on the command line. The flags of the settings a run of
``itra-bench`` has too (``--precision``, ``--device``, ``--seed``, ...) are itra-bench's
declarations (``itra_bench.add_run_flag``), with the rules that check them.

A tower's old three settings (``image_model_builder``, ``image_model``, ``image_model_tag``
and the text ones) are still read, as flags, YAML keys and in checkpoints, and turned into
the tower's spec (:mod:`itra_train.tower_specs`); flags and files that use them get a note.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yacs.config import CfgNode

from itra_bench import (
    PRECISION_ALIASES,
    PRECISIONS,
    TEXT_POOLERS,
    Number,
    UserError,
    add_run_flag,
    expand_path,
    load_yaml,
    non_negative_float,
    non_negative_int,
    positive_int,
    seed_int,
    unit_float,
)

from .tower_specs import (
    OLD_KEYS,
    apply_old_towers,
    normalise_spec,
    note_old_towers,
    take_old_towers,
    upgrade_towers,
)

#: Old spellings still accepted, per setting: replaced by today's name when settings are read
#: (flags, YAML files and the settings a checkpoint recorded).
ALIASES: dict[str, dict[str, str]] = {"precision": PRECISION_ALIASES}
#: The tower settings, each an itra-bench model spec (their schemes' old spellings are
#: renamed by :func:`normalise`).
TOWERS = ("image_tower", "text_tower")
HEADS = ("auto", "none", "linear", "mlp", "dino")
DISTILL = ("", "image", "text")
#: ``--adapter`` values provided by peft, with ITRA's names as aliases.
ADAPTERS = {"lora": "lora", "lora_adapter": "lora", "ia3": "ia3", "ia3_adapter": "ia3",
            "prefix_tuning": "prefix_tuning", "prompt_tuning": "prompt_tuning"}
#: ``--adapter`` values provided by AdapterHub's ``adapters`` library (the ``adapters``
#: extra), with ITRA's names as aliases (ITRA's table calls Compacter ``dummy``).
ADAPTERHUB_ADAPTERS = {"bottleneck": "bottleneck", "bottleneck_adapter": "bottleneck",
                       "houlsby": "houlsby", "lang_adapter": "lang_adapter",
                       "compacter": "compacter", "dummy": "compacter", "mam": "mam",
                       "mam_adapter": "mam", "unipelt": "unipelt"}


def defaults() -> CfgNode:
    """The default settings (a fresh, mutable copy)."""
    c = CfgNode()
    # Towers.
    c.image_tower = "openclip:RN50"
    c.pretrained_image_model = False
    c.text_tower = "openclip:RN50"
    c.pretrained_text_model = False
    c.text_pooler = ""
    c.weights_cache = ""
    c.image_head = "auto"
    c.text_head = "auto"
    c.embed_dim = 0
    c.head_hidden = 512
    c.head_layers = 2
    c.prototypes = 0
    c.lock_image = False
    c.lock_text = False
    c.adapter = ""
    c.adapter_rank = 8
    c.adapter_alpha = 16
    c.adapter_tokens = 16
    c.adapter_options = []
    # Distillation.
    c.teacher = ""
    c.distill_image = ""
    c.distill_text = ""
    c.cache_teacher = False
    c.cache_dir = "~/.cache/itra_bench/features"
    c.align_weight = 0.0
    # Data.
    c.train_data = ""
    c.dataset_type = "auto"
    c.train_num_samples = 0
    c.dataset_resampled = False
    c.skip_corrupt = False
    c.csv_separator = "\t"
    c.csv_img_key = "filepath"
    c.csv_caption_key = "title"
    c.workers = 1
    # Objective and optimisation.
    c.loss = "infonce"
    c.loss_options = []
    c.epochs = 32
    c.batch_size = 64
    c.lr = 5e-4
    c.wd = 0.2
    c.beta1 = 0.9
    c.beta2 = 0.98
    c.eps = 1e-6
    c.warmup = 100
    c.precision = "fp32"
    c.accum_freq = 1
    c.grad_clip_norm = 0.0
    c.seed = 0
    c.device = "auto"
    # Logging, checkpoints, evaluation.
    c.logs = "./logs"
    c.name = ""
    c.save_frequency = 1
    c.log_every_n_steps = 10
    c.resume = ""
    c.eval_tasks = []
    c.eval_every = 1
    c.eval_data_root = "."
    c.eval_batch_size = 64
    c.progress = True
    return c


#: Settings that may change when a run is resumed: they steer the run, not what it computes.
RESUMABLE = frozenset({
    "epochs", "workers", "logs", "name", "save_frequency", "log_every_n_steps", "resume",
    "eval_tasks", "eval_every", "eval_data_root", "eval_batch_size", "progress", "device",
    "weights_cache", "train_data", "cache_teacher", "cache_dir", "skip_corrupt",
})
DATASET_TYPES = ("auto", "csv", "webdataset")
#: The allowed range of every numeric setting: the flag's argparse type, and the check of a
#: value from a YAML file.
NUMBERS: dict[str, Number] = {
    **dict.fromkeys(("epochs", "batch_size", "accum_freq", "save_frequency",
                     "log_every_n_steps", "eval_every", "eval_batch_size", "head_hidden",
                     "head_layers", "adapter_rank", "adapter_alpha", "adapter_tokens"),
                    positive_int),
    **dict.fromkeys(("workers", "warmup", "embed_dim", "prototypes", "train_num_samples"),
                    non_negative_int),
    **dict.fromkeys(("lr", "wd", "eps", "grad_clip_norm", "align_weight"), non_negative_float),
    "beta1": unit_float, "beta2": unit_float, "seed": seed_int,
}
#: Settings naming files or folders. Model names and tags are expanded by their builders,
#: which know which part of a spec is a path.
PATH_SETTINGS = ("train_data", "logs", "resume", "cache_dir", "weights_cache", "eval_data_root")

_HELP = {
    "image_tower": "the image tower, as an itra-bench model spec (`itra-bench list models`): "
                   "openclip:ARCH[@WEIGHTS] (ARCH: a name or an open_clip config .json; "
                   "WEIGHTS: a pretrained tag or weights file) | timm:NAME[@WEIGHTS] | "
                   "torchvision:NAME[@WEIGHTS] | torchhub:REPO:ENTRYPOINT | a plugin's "
                   "SCHEME:SPEC; the weights load with --pretrained-image-model (replaces "
                   "--image-model-builder, --image-model and --image-model-tag)",
    "pretrained_image_model": "start the image tower from its pretrained weights (local "
                              "files only); otherwise from a seeded random initialisation",
    "text_tower": "the text tower, as a model spec: openclip:ARCH[@WEIGHTS] | hf:PATH (alias "
                  "huggingface:) | sbert:PATH | a plugin's SCHEME:SPEC (replaces "
                  "--text-model-builder, --text-model and --text-model-tag)",
    "pretrained_text_model": "start the text tower from its pretrained weights",
    "text_pooler": "cls | mean token pooling for hf text towers",
    "weights_cache": "where pretrained tags are looked up",
    "image_head": "projection after the image tower: auto (linear only when the towers' "
                  "widths differ) | none | linear | mlp | dino (DINO's MLP head; with "
                  "--prototypes a shared prototype layer follows)",
    "text_head": "projection after the text tower (as --image-head)",
    "embed_dim": "joint embedding width of the heads (0: the smaller tower width)",
    "head_hidden": "hidden width of mlp and dino heads",
    "head_layers": "number of linear layers of mlp and dino heads",
    "prototypes": "size K of the prototype layer after the heads (0: none); DINO, ProtoCPC",
    "adapter": "parameter-efficient tuning of the text tower. peft: lora | ia3 | "
               "prefix_tuning | prompt_tuning (ITRA names lora_adapter, ia3_adapter); "
               "AdapterHub (the adapters extra): bottleneck | houlsby | lang_adapter | "
               "compacter | mam | unipelt (ITRA names bottleneck_adapter, dummy, mam_adapter)",
    "adapter_rank": "LoRA rank",
    "adapter_alpha": "LoRA alpha",
    "adapter_tokens": "virtual tokens of prefix and prompt tuning",
    "adapter_options": "AdapterHub methods: KEY=VALUE fields of the method's config class "
                       "(e.g. reduction_factor=8; MAM and UniPELT: prefix_tuning.prefix_length"
                       "=10, adapter.reduction_factor=4, lora.r=4); values are read as YAML",
    "teacher": "a frozen teacher: any itra-bench model spec (checkpoint, openclip:ARCH@W, "
               "hf:, sbert:, ...)",
    "distill_image": "the student's image tower learns from the teacher's image | text tower",
    "distill_text": "the student's text tower learns from the teacher's image | text tower",
    "cache_dir": "feature cache folder used by --cache-teacher",
    "align_weight": "with --teacher: add this weight times InfoNCE between the student's own "
                    "image and text towers (relational losses alone do not align them)",
    "cache_teacher": "encode the training set with the teacher once, through the feature "
                     "cache, instead of at every step (the data has no augmentation)",
    "lock_image": "freeze the image tower (LiT)",
    "lock_text": "freeze the text tower",
    "train_data": "CSV of image paths and captions (relative paths: from the CSV's folder), "
                  "or webdataset shards: 'shards/{00000..00999}.tar', a URL pattern "
                  "(https://, s3://, gs://, file://) or 'pipe:COMMAND' (braces expanded "
                  "over the command), several patterns joined by '::'",
    "dataset_type": "auto (shards when every --train-data pattern ends in .tar, .tar.gz or "
                    ".tgz, else csv) | csv | webdataset",
    "train_num_samples": "webdataset: samples per epoch (required; the steps per epoch are "
                         "this over the global batch)",
    "dataset_resampled": "webdataset: draw shards with replacement (seeded by seed, epoch, "
                         "rank and worker) instead of dealing each shard to one worker an "
                         "epoch",
    "skip_corrupt": "webdataset: skip samples that cannot be read (no image or txt member, "
                    "undecodable image, damaged tar member), count them and report them at "
                    "the end of the epoch, instead of stopping",
    "csv_separator": "CSV column separator (default: tab)",
    "csv_img_key": "column holding image paths",
    "csv_caption_key": "column holding captions",
    "workers": "DataLoader worker processes per training process",
    "loss": "training objective (`itra-bench list losses`)",
    "loss_options": "KEY=VALUE options of the loss's constructor (e.g. queue_size=4096); "
                    "values are read as YAML scalars",
    "epochs": "number of epochs",
    "batch_size": "batch size per process",
    "lr": "peak learning rate (AdamW)",
    "wd": "weight decay (not applied to biases, norms, embeddings' scale or logit scale)",
    "beta1": "AdamW beta1", "beta2": "AdamW beta2", "eps": "AdamW epsilon",
    "warmup": "linear warm-up steps before the cosine schedule",
    "precision": f"{' | '.join(PRECISIONS)} (amp_fp16: float16 with a gradient scaler; the "
                 "old name amp is accepted)",
    "accum_freq": "accumulate this many batches per optimizer step (contrastive losses see "
                  "the whole accumulated batch)",
    "grad_clip_norm": "clip the gradient norm to this value (0: no clipping)",
    "seed": "random seed",
    "device": "auto | cpu | cuda (under torchrun each process takes cuda:LOCAL_RANK)",
    "logs": "folder holding the run folders",
    "name": "run folder name (default: a timestamp and the model names)",
    "save_frequency": "write checkpoints/epoch_N.pt every N epochs (epoch_latest.pt always)",
    "log_every_n_steps": "training log line every N optimizer steps",
    "resume": "continue a run: latest (this run's epoch_latest.pt) or a checkpoint path",
    "eval_tasks": "itra-bench tasks or suites evaluated on the current weights during training",
    "eval_every": "evaluate every N epochs",
    "eval_data_root": "--data-root of the evaluation tasks",
    "eval_batch_size": "batch size of the evaluation tasks",
    "progress": "rich progress bar on an interactive terminal",
}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _with_default(text: str, value: Any) -> str:
    """A flag's help followed by its default (what a run gets without the flag)."""
    if "(default" in text:  # the help already says it in words
        return text
    if isinstance(value, bool):
        shown = "on" if value else "off"
    elif value in ("", []):
        shown = "none"
    else:
        shown = str(value).replace("%", "%%")  # help strings are %-formatted by argparse
    return f"{text} (default: {shown})".strip()


#: Settings whose flags are the run flags itra-bench's commands share (same rule, the
#: trainer's own help and default).
RUN_FLAG_SETTINGS = ("device", "precision", "seed", "batch_size", "workers")


def build_parser(prog: str = "itra-train") -> argparse.ArgumentParser:
    """The command line of ``itra-train``: one flag per setting, plus ``--config``."""
    parser = argparse.ArgumentParser(
        prog=prog, argument_default=argparse.SUPPRESS,
        description="Train an image-text model; checkpoints load in `itra-bench run --model`.")
    parser.add_argument("--config", metavar="YAML", help="settings file (flags override it)")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="load an extra plugin module (losses, model builders)")
    for key, value in defaults().items():
        kwargs: dict[str, Any] = {"help": _with_default(_HELP.get(key, ""), value), "dest": key}
        if key in RUN_FLAG_SETTINGS:
            add_run_flag(parser, key, default=argparse.SUPPRESS, **kwargs)
        elif isinstance(value, bool):
            parser.add_argument(_flag(key), action=argparse.BooleanOptionalAction, **kwargs)
        elif isinstance(value, list):
            metavar = "KEY=VALUE" if key.endswith("_options") else "TASK"
            parser.add_argument(_flag(key), nargs="+", metavar=metavar, **kwargs)
        else:
            # Model schemes come from plugins and precision has aliases: both are checked
            # after parsing, with a close-match suggestion.
            choices = {"image_head": HEADS, "text_head": HEADS, "dataset_type": DATASET_TYPES,
                       "distill_image": DISTILL, "distill_text": DISTILL}.get(key)
            parser.add_argument(_flag(key), type=NUMBERS.get(key, type(value)),
                                choices=choices, metavar="SPEC" if key in TOWERS else None,
                                **kwargs)
    # A tower's three settings before --image-tower / --text-tower: still read, not shown.
    for key in (k for keys in OLD_KEYS.values() for k in keys):
        parser.add_argument(_flag(key), dest=key, help=argparse.SUPPRESS)
    return parser


def load_config(argv: Sequence[str] | None = None, prog: str = "itra-train"
                ) -> tuple[CfgNode, list[str]]:
    """Parse the command line into frozen settings; returns them and the ``--plugin`` list."""
    args = vars(build_parser(prog).parse_args(argv))
    plugins = args.pop("plugin", [])
    cfg = defaults()
    config_file = args.pop("config", None)
    used = merge_file(cfg, config_file) if config_file else []
    old = take_old_towers(args, "--")
    for key, value in args.items():
        cfg[key] = value
    used += apply_old_towers(cfg, old, "--")
    if used:
        note_old_towers(used, cfg)
    normalise(cfg)
    expand_paths(cfg)
    validate(cfg)
    cfg.freeze()
    return cfg, plugins


def expand_paths(cfg: CfgNode) -> None:
    """Expand ``~`` and ``$VAR`` in the settings that name files or folders (each
    ``::``-separated part of ``--train-data``), in place; from flags or a YAML file alike."""
    for key in PATH_SETTINGS:
        cfg[key] = "::".join(expand_path(part) for part in cfg[key].split("::"))


def merge_file(cfg: CfgNode, path: str) -> list[str]:
    """Merge a YAML settings file into ``cfg``, naming the file and key on bad input; returns
    the deprecated keys it used (a tower's old settings, read into the tower's spec)."""
    file = Path(expand_path(path))
    if not file.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        # Read here rather than by yacs: the project's loader refuses a repeated key, and
        # yacs would run a `.py` settings file as code.
        values = load_yaml(file.read_text(encoding="utf-8-sig"))
        old = take_old_towers(values, "", path) if isinstance(values, dict) else {}
        cfg.merge_from_other_cfg(CfgNode(values))
    except UserError:
        raise
    except KeyError as exc:
        known = ", ".join(sorted(cfg))
        raise UserError(f"{path}: {exc.args[0]}; known settings: {known}") from exc
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from exc
    except Exception as exc:  # yaml syntax errors
        raise UserError(f"{path}: cannot read it as YAML settings: {exc}") from exc
    try:
        return apply_old_towers(cfg, old, "")
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from exc


def validate(cfg: CfgNode) -> None:
    """Reject impossible settings with a message naming the flag."""
    # Flags were checked as they were parsed; a YAML file's values are checked here.
    for key, rule in NUMBERS.items():
        problem = rule.problem(cfg[key])
        if problem is not None:
            raise UserError(f"{_flag(key)} {problem}")
    for key, allowed in (("precision", PRECISIONS), ("image_head", HEADS),
                         ("text_head", HEADS)):
        if cfg[key] not in allowed:
            close = difflib.get_close_matches(str(cfg[key]), allowed, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{_flag(key)} must be one of {', '.join(allowed)}, got "
                            f"{cfg[key]!r}.{hint}")
    for key in TOWERS:
        if not cfg[key].partition(":")[0]:
            raise UserError(f"{_flag(key)} {cfg[key]!r} names no model scheme; give a model "
                            "spec SCHEME:MODEL such as openclip:RN50 (`itra-bench list "
                            "models`)")
    if cfg.text_pooler and cfg.text_pooler not in TEXT_POOLERS:
        raise UserError(f"--text-pooler must be {' or '.join(TEXT_POOLERS)}, got "
                        f"{cfg.text_pooler!r}")
    for key in ("distill_image", "distill_text"):
        if cfg[key] not in DISTILL:
            raise UserError(f"{_flag(key)} must be image or text, got {cfg[key]!r}")
    if (cfg.distill_image or cfg.distill_text) and not cfg.teacher:
        raise UserError("--distill-image/--distill-text need a --teacher model spec")
    if cfg.teacher and not (cfg.distill_image or cfg.distill_text):
        raise UserError("--teacher needs --distill-image and/or --distill-text (image | text: "
                        "the teacher tower each student tower learns from)")
    if cfg.adapter:
        if cfg.lock_text:
            raise UserError("--adapter already freezes the text tower's own weights; drop "
                            "--lock-text (it would freeze the adapter too)")
        # Whether an AdapterHub method can be built (its library installed, its options
        # fields of its config class) is checked when the trainer starts
        # (itra_train.adapters.check_adapter): settings are read without the library.
        known = [*ADAPTERS, *ADAPTERHUB_ADAPTERS]
        if cfg.adapter not in known:
            close = difflib.get_close_matches(cfg.adapter, known, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"--adapter must be one of {', '.join(known)}, got "
                            f"{cfg.adapter!r}.{hint}")
        if cfg.adapter in ADAPTERS and cfg.adapter_options:
            raise UserError(f"--adapter-options applies to AdapterHub's methods "
                            f"({', '.join(ADAPTERHUB_ADAPTERS)}); peft's {cfg.adapter} takes "
                            "--adapter-rank, --adapter-alpha and --adapter-tokens")
    elif cfg.adapter_options:
        raise UserError("--adapter-options needs --adapter (an AdapterHub method such as "
                        "bottleneck)")
    if not cfg.train_data:
        raise UserError("--train-data is required: a CSV of image paths and captions, or "
                        "webdataset shards ('shards/{00000..00099}.tar')")
    if cfg.dataset_type not in DATASET_TYPES:
        raise UserError(f"--dataset-type must be one of {', '.join(DATASET_TYPES)}, got "
                        f"{cfg.dataset_type!r}")


def dataset_type(cfg: CfgNode) -> str:
    """``--dataset-type``, with ``auto`` resolved: webdataset when every ``::``-separated
    part of ``--train-data`` names tar shards, else csv."""
    if cfg.dataset_type != "auto":
        return cfg.dataset_type
    from .wds_data import looks_like_shards

    return "webdataset" if looks_like_shards(cfg.train_data) else "csv"


def loss_options(cfg: CfgNode) -> dict[str, Any]:
    """``--loss-options KEY=VALUE ...`` as constructor keywords (values parsed as YAML)."""
    return _key_values(cfg, "loss_options")


def adapter_options(cfg: CfgNode) -> dict[str, Any]:
    """``--adapter-options KEY=VALUE ...`` (values parsed as YAML); a key may be dotted
    (``adapter.reduction_factor``) to name a part of a combined method."""
    return _key_values(cfg, "adapter_options", dotted=True)


def _key_values(cfg: CfgNode, key: str, dotted: bool = False) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in cfg[key]:
        name, sep, value = str(item).partition("=")
        parts = name.split(".") if dotted else [name]
        if not sep or not all(p.isidentifier() for p in parts):
            raise UserError(f"{_flag(key)}: expected KEY=VALUE, got {item!r}")
        try:
            out[name] = load_yaml(value)
        except yaml.YAMLError as exc:
            raise UserError(f"{_flag(key)}: {item!r}: the value is not YAML ({exc})") from exc
    return out


def as_dict(cfg: CfgNode) -> dict[str, Any]:
    """The settings as a plain dict (what checkpoints and params.txt record)."""
    return {k: (list(v) if isinstance(v, list | tuple) else v) for k, v in cfg.items()}


def normalise(values: CfgNode | dict[str, Any]) -> None:
    """Replace old spellings (:data:`ALIASES`, and the towers' schemes) by today's names,
    in place."""
    for key, renamed in ALIASES.items():
        value = values.get(key)
        if isinstance(value, str) and value in renamed:
            values[key] = renamed[value]
    for key in TOWERS:
        if isinstance(values.get(key), str):
            values[key] = normalise_spec(values[key])


def from_dict(values: dict[str, Any]) -> CfgNode:
    """Settings recorded in a checkpoint, completed by today's defaults for newer keys and
    with old spellings renamed (a tower's three old settings become its spec)."""
    cfg = defaults()
    for key, value in upgrade_towers(values).items():
        if key in cfg:
            cfg[key] = value
    normalise(cfg)
    return cfg


def differences(saved: dict[str, Any], current: CfgNode) -> list[str]:
    """The settings (outside :data:`RESUMABLE`) whose values differ, as readable lines
    (an old spelling in ``saved`` equals today's name)."""
    # A checkpoint written before a setting existed ran with that setting's default.
    saved = {**as_dict(defaults()), **upgrade_towers(saved)}
    normalise(saved)
    out = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE:
            continue
        old, new = saved.get(key, "<unset>"), current.get(key, "<unset>")
        if isinstance(old, list | tuple) and isinstance(new, list | tuple):
            old, new = list(old), list(new)
        if old != new:
            out.append(f"{_flag(key)}: checkpoint {old!r}, now {new!r}")
    return out
