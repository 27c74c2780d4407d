"""``hf:`` models: a local HuggingFace transformers folder (as written by ``save_pretrained``).

A folder whose config has both a vision and a text tower (CLIP, SigLIP, ...) becomes an
image-text model using the model's own projections; any other folder becomes a text encoder
whose token states are pooled (``--text-pooler mean``, the default, or ``cls``).
"""

from __future__ import annotations

import inspect
import json
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from itra_bench.errors import UserError
from itra_bench.fingerprint import fingerprint
from itra_bench.model import IMAGE, TEXT, EncoderModel, ModelOptions
from itra_bench.paths import expand_path
from itra_bench.weights import (
    mismatch_error,
    no_weights_error,
    pickled_weights_error,
    random_init_config,
    seeded_init,
)

from .image_transforms import RESAMPLE_NAMES, EvalTransform, describe_transform

SCHEME = "hf"
POOLERS = ("mean", "cls")
#: Image-text model types whose HF classes offer get_image_features / get_text_features.
DUAL_ENCODER_TYPES = frozenset({"clip", "siglip", "siglip2", "chinese_clip", "altclip", "align",
                                "metaclip_2"})
#: Text towers trained on inputs padded to their full length (HF's processors do the same).
PAD_TO_MAX_LENGTH_TYPES = frozenset({"siglip", "siglip2"})
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json",
                   "pytorch_model*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
PROCESSOR_FILE = "preprocessor_config.json"
#: Image processors that only resize, centre-crop and normalise (others are called as they are).
PLAIN_PROCESSORS = frozenset({"CLIPImageProcessor", "SiglipImageProcessor",
                              "ChineseCLIPImageProcessor"})
#: Fallback when a tokenizer states no usable maximum length (HF uses a 1e30 sentinel).
DEFAULT_MAX_LENGTH = 512


class HFTextEncoder(EncoderModel):
    """A transformers encoder whose token states are pooled into one vector per text."""

    modalities = frozenset({TEXT})

    def __init__(self, model: nn.Module, tokenizer: Any, pooler: str, max_length: int,
                 fingerprint: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooler = pooler
        self.max_length = max_length
        self.fingerprint = fingerprint
        self._inputs = set(inspect.signature(model.forward).parameters)
        # Padding to the batch's longest text is masked out of attention and pooling.
        self.dynamic_text_length = True

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Embed strings into ``[B, D]``: CLS token state or attention-masked mean of states."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items() if k in self._inputs}
        hidden = self.model(**batch).last_hidden_state
        if self.pooler == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        # Same clamp as sentence-transformers' Pooling, so the two agree bit for bit.
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class HFDualEncoder(EncoderModel):
    """A transformers image-text model (CLIP-like) using its own projection heads."""

    modalities = frozenset({IMAGE, TEXT})

    def __init__(self, model: nn.Module, tokenizer: Any,
                 image_transform: Callable[[Any], torch.Tensor], max_length: int,
                 pad_to_max_length: bool, fingerprint: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.max_length = max_length
        self.padding: str | bool = "max_length" if pad_to_max_length else True
        # Padding to the batch's longest text is masked out (towers trained on full-length
        # inputs keep them, and gain nothing from length-sorted batches).
        self.dynamic_text_length = not pad_to_max_length
        self.fingerprint = fingerprint
        self._text_inputs = set(inspect.signature(model.get_text_features).parameters)

    def visual_parameters(self) -> Iterator[nn.Parameter]:
        """The vision tower and its projection."""
        for name in ("vision_model", "visual_projection"):
            module = getattr(self.model, name, None)
            if module is not None:
                yield from module.parameters()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Embed preprocessed images ``[B, 3, H, W]`` into ``[B, D]`` (projected, unnormalised)."""
        return _features(self.model.get_image_features(pixel_values=images.to(self.device)))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Embed strings into ``[B, D]`` (projected, not normalised)."""
        batch = self.tokenizer(list(texts), padding=self.padding, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items() if k in self._text_inputs}
        return _features(self.model.get_text_features(**batch))


def _features(out: Any) -> torch.Tensor:
    # transformers < 5 returns the projected tensor; 5.x returns an output whose pooler_output
    # holds it.
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


class ProcessorTransform:
    """The folder's own HF image processor as a PIL -> tensor transform.

    Used for processors that are more than resize / centre crop / normalise, so their
    preprocessing is reproduced exactly rather than approximated.
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Any) -> torch.Tensor:
        return self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"ProcessorTransform({self.processor.to_json_string()})"


def build_hf(rest: str, options: ModelOptions) -> EncoderModel:
    """Build ``hf:PATH`` from a local folder on the CPU in eval mode."""
    from transformers import AutoConfig

    spec = f"{SCHEME}:{rest}"
    folder = _check_folder(spec, rest)
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    weights = sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)})
    if not weights and not options.random_init:
        raise no_weights_error(
            spec, f"a folder with weights (model.safetensors or pytorch_model.bin next to "
                  f"config.json; {folder} has none)")
    is_dual = hasattr(config, "vision_config") and hasattr(config, "text_config")
    if is_dual and config.model_type not in DUAL_ENCODER_TYPES:
        raise UserError(f"{spec}: model type {config.model_type!r} has vision and text towers "
                        "but is not a dual encoder itra-bench knows how to embed with (supported: "
                        f"{', '.join(sorted(DUAL_ENCODER_TYPES))})")
    model = _load_model(spec, folder, config, bool(weights), options.seed, is_dual)
    tokenizer = _load_tokenizer(spec, folder)
    files = [folder / "config.json", *weights,
             *(folder / f for f in TOKENIZER_FILES if (folder / f).is_file())]
    fp_config: dict[str, Any] = {"scheme": SCHEME, "model_type": config.model_type,
                                 "architecture": type(model).__name__}
    if not weights:
        fp_config.update(random_init_config(options.seed))

    if is_dual:
        if options.text_pooler is not None:
            raise UserError(f"{spec}: --text-pooler applies to text encoders; "
                            f"{config.model_type} models use their own projection heads")
        transform = _image_transform(spec, folder)
        text_cfg = config.text_config
        max_length = _max_length(tokenizer, getattr(text_cfg, "max_position_embeddings", None))
        pad_max = config.model_type in PAD_TO_MAX_LENGTH_TYPES
        fp_config.update(transform=describe_transform(transform), max_length=max_length,
                         pad_to_max_length=pad_max)
        files.append(folder / PROCESSOR_FILE)
        result: EncoderModel = HFDualEncoder(model, tokenizer, transform, max_length, pad_max,
                                             fingerprint(fp_config, files))
    else:
        pooler = options.text_pooler or "mean"
        if pooler not in POOLERS:
            raise UserError(f"{spec}: --text-pooler {pooler!r} is not one of "
                            f"{', '.join(POOLERS)}")
        if getattr(config, "is_encoder_decoder", False):
            model = model.get_encoder()  # embeddings come from the encoder alone (e.g. T5)
        max_length = _max_length(tokenizer, getattr(config, "max_position_embeddings", None))
        # "pooler" as fingerprints have always named it: a new key would change them all.
        fp_config.update(pooler=pooler, max_length=max_length)
        result = HFTextEncoder(model, tokenizer, pooler, max_length,
                               fingerprint(fp_config, files))
    result.name = spec
    return result.eval()


def _check_folder(spec: str, rest: str) -> Path:
    expected = ("a save_pretrained folder: config.json, the weights (model.safetensors or "
                "pytorch_model.bin) and the tokenizer files (plus preprocessor_config.json for "
                "image-text models)")
    if not rest:
        raise UserError(f"{spec}: give the path of {expected}")
    folder = Path(expand_path(rest))
    if not folder.is_dir():
        raise UserError(f"{spec}: {folder} is not a folder; expected {expected}. Hub names are "
                        "not downloaded at run time: save the model locally first.")
    if not (folder / "config.json").is_file():
        raise UserError(f"{spec}: {folder} has no config.json; expected {expected}")
    return folder


def _load_model(spec: str, folder: Path, config: Any, has_weights: bool, seed: int,
                is_dual: bool) -> nn.Module:
    from transformers import AutoModel

    with seeded_init(seed):
        if not has_weights:
            return AutoModel.from_config(config).float()
        return load_checked(spec, folder, pooled_text=not is_dual).float()


def load_checked(spec: str, folder: Path, pooled_text: bool) -> nn.Module:
    """``AutoModel.from_pretrained(folder)``, refusing weights that do not fit its config.

    transformers fills missing weights with random ones and only logs it; here missing or
    wrongly shaped weights are a :class:`UserError`. With ``pooled_text`` a missing ``pooler``
    layer is accepted (text embeddings are pooled from token states, never from it).
    Unexpected keys are accepted: they are heads of the checkpoint's own task (e.g. MLM) that
    the bare model does not use, as transformers itself treats them.
    """
    from transformers import AutoModel

    try:
        # Mismatched shapes are reported below with the other differences, in one message.
        model, info = AutoModel.from_pretrained(
            str(folder), local_files_only=True, output_loading_info=True,
            ignore_mismatched_sizes=True)
    except pickle.UnpicklingError as exc:
        # Only pickle-based files unpickle: the .bin weights (safetensors cannot hold code).
        raise pickled_weights_error(
            sorted(folder.glob("pytorch_model*.bin")) or [folder], exc,
            "Save the model with save_pretrained(folder), which writes model.safetensors, or "
            "convert the file to .safetensors.") from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{spec}: transformers could not load {folder}: {exc}") from exc
    missing = sorted(k for k in info["missing_keys"]
                     if not (pooled_text and k.startswith("pooler.")))
    mismatched = sorted(f"{k} (file {list(a)} vs model {list(b)})"
                        for k, a, b in info["mismatched_keys"])
    if missing or mismatched:
        raise mismatch_error(str(folder), f"{type(model).__name__} as configured in "
                             f"{folder / 'config.json'}", missing, [], mismatched,
                             "The config.json does not describe the model these weights were "
                             "saved from; restore the config that was saved with them.")
    return model


def _load_tokenizer(spec: str, folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{spec}: no usable tokenizer in {folder} ({exc}). Save it next to the "
                        "model with tokenizer.save_pretrained(folder) (tokenizer.json or "
                        "vocab files and tokenizer_config.json).") from exc


def _max_length(tokenizer: Any, positions: int | None) -> int:
    limit = getattr(tokenizer, "model_max_length", None) or DEFAULT_MAX_LENGTH
    if limit > 100_000:  # the "no limit stated" sentinel
        limit = positions or DEFAULT_MAX_LENGTH
    return min(limit, positions) if positions else limit


def _get(obj: Any, key: str) -> Any:
    # Processor sizes are plain dicts in transformers 4 and SizeDict objects in 5.
    if obj is None or isinstance(obj, int):
        return None
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _image_transform(spec: str, folder: Path) -> Callable[[Any], torch.Tensor]:
    """The folder's eval preprocessing as an EvalTransform when it is resize / crop /
    normalise, else the processor itself."""
    from transformers import AutoImageProcessor

    if not (folder / PROCESSOR_FILE).is_file():
        raise UserError(f"{spec}: {folder} has no {PROCESSOR_FILE}; save the image processor "
                        "next to the model with processor.save_pretrained(folder)")
    raw = json.loads((folder / PROCESSOR_FILE).read_text(encoding="utf-8"))
    try:
        proc = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"{spec}: cannot read {folder / PROCESSOR_FILE}: {exc}") from exc

    size = getattr(proc, "size", None)
    if isinstance(size, int):
        resize: int | tuple[int, int] | None = size
    elif _get(size, "shortest_edge") and not _get(size, "longest_edge"):
        resize = int(_get(size, "shortest_edge"))
    elif _get(size, "height") and _get(size, "width"):
        resize = (int(_get(size, "height")), int(_get(size, "width")))
    else:
        resize = None
    crop_size = getattr(proc, "crop_size", None)
    crop: int | tuple[int, int] | None = None
    if getattr(proc, "do_center_crop", False):
        crop = ((crop_size, crop_size) if isinstance(crop_size, int)
                else (int(_get(crop_size, "height")), int(_get(crop_size, "width"))))
    resample = getattr(proc, "resample", raw.get("resample"))
    interpolation = RESAMPLE_NAMES.get(int(resample)) if resample is not None else None
    standard = (
        resize is not None and getattr(proc, "do_resize", True) and interpolation is not None
        and getattr(proc, "do_rescale", True)
        and abs(float(getattr(proc, "rescale_factor", 1 / 255)) - 1 / 255) < 1e-9
        and not getattr(proc, "do_pad", False)
        and type(proc).__name__.removesuffix("Fast").removesuffix("Pil") in PLAIN_PROCESSORS
    )
    if not standard:
        return ProcessorTransform(proc)
    normalize = getattr(proc, "do_normalize", True)
    return EvalTransform(
        resize=resize, crop=crop,
        mean=tuple(proc.image_mean) if normalize else (0.0, 0.0, 0.0),
        std=tuple(proc.image_std) if normalize else (1.0, 1.0, 1.0),
        interpolation=interpolation, crop_offset="floor",
    )
