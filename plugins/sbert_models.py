"""``sbert:`` models: a local sentence-transformers folder, run through its own modules.

The embedding is the model's ``sentence_embedding`` before any final ``Normalize`` module:
itra-bench models return unnormalised features and each protocol normalises where its
definition says so (cosine scores are unchanged). The model's default prompt and
``truncate_dim``, when its config sets them, are applied as ``encode()`` would.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from itra_bench.errors import UserError
from itra_bench.fingerprint import fingerprint
from itra_bench.model import TEXT, EncoderModel, ModelOptions
from itra_bench.paths import expand_path
from itra_bench.weights import (
    no_weights_error,
    pickled_weights_error,
    random_init_config,
    seeded_init,
)

from .hf_models import load_checked

SCHEME = "sbert"
#: Files whose bytes decide the embeddings (configs, weights, tokenizer); READMEs etc. do not.
FINGERPRINT_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".pt", ".pth")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: Weight files that torch.load unpickles (and so may hold code).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


class SentenceTransformerEncoder(EncoderModel):
    """A SentenceTransformer seen through the EncoderModel contract (text only)."""

    modalities = frozenset({TEXT})

    def __init__(self, st: Any, prompt: str | None, truncate_dim: int | None,
                 fingerprint: str) -> None:
        super().__init__()
        self.st = st
        self.prompt = prompt
        self.truncate_dim = truncate_dim
        self.fingerprint = fingerprint
        # sentence-transformers pads each batch to its longest text and masks the padding.
        self.dynamic_text_length = True

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Embed strings into ``[B, D]`` with the model's own tokenizer and modules."""
        texts = list(texts)
        if hasattr(self.st, "preprocess"):  # sentence-transformers >= 6
            features = self.st.preprocess(texts, prompt=self.prompt) if self.prompt \
                else self.st.preprocess(texts)
        else:
            features = self.st.tokenize([(self.prompt or "") + t for t in texts])
        features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                    for k, v in features.items()}
        embeddings = self.st(features)["sentence_embedding"]
        if self.truncate_dim:
            embeddings = embeddings[:, : self.truncate_dim]
        return embeddings


def build_sbert(rest: str, options: ModelOptions) -> SentenceTransformerEncoder:
    """Build ``sbert:PATH`` from a local sentence-transformers folder on the CPU in eval mode."""
    spec = f"{SCHEME}:{rest}"
    if options.text_pooler is not None:
        # The folder's own Pooling module decides the pooling; a flag that changed nothing
        # would mislabel the results.
        raise UserError(f"{spec}: --text-pooler does not apply to sentence-transformers "
                        "folders (their Pooling module decides); drop it, or load the "
                        "transformer as hf:PATH to choose the pooling")
    folder = Path(expand_path(rest)) if rest else None
    expected = ("a sentence-transformers folder (model.save(folder)): modules.json, the "
                "transformer's config.json, weights and tokenizer files")
    if folder is None or not folder.is_dir():
        raise UserError(f"{spec}: {folder or '(no path)'} is not a folder; expected {expected}. "
                        "Hub names are not downloaded at run time: save the model locally first.")
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise UserError(f"{spec}: {folder} has neither modules.json nor config.json; "
                        f"expected {expected}")
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix in FINGERPRINT_SUFFIXES)
    has_weights = any(p.suffix in WEIGHT_SUFFIXES for p in files)
    if not has_weights and not options.random_init:
        raise no_weights_error(spec, f"a folder that holds the weights ({folder} has no "
                                     "model.safetensors or pytorch_model.bin)")
    if has_weights:
        for module_dir in _transformer_dirs(folder):
            # sentence-transformers would silently randomise weights missing from the file.
            load_checked(spec, module_dir, pooled_text=True)
        st = _load(spec, folder)
    else:
        with tempfile.TemporaryDirectory(prefix="itra-sbert-random-") as tmp:
            st = _load(spec, _with_random_weights(spec, folder, Path(tmp), options.seed))
    dropped = _drop_final_normalize(st)
    prompt = st.prompts.get(st.default_prompt_name) if st.default_prompt_name else None
    truncate_dim = getattr(st, "truncate_dim", None)
    config: dict[str, Any] = {
        "scheme": SCHEME, "modules": [type(m).__name__ for m in st],
        "dropped_normalize": dropped, "prompt": prompt, "truncate_dim": truncate_dim,
    }
    if not has_weights:
        config.update(random_init_config(options.seed))
    model = SentenceTransformerEncoder(st.float(), prompt, truncate_dim,
                                       fingerprint(config, files))
    model.name = spec
    return model.eval()


def _load(spec: str, folder: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except pickle.UnpicklingError as exc:
        # A module's weights (a Dense layer's pytorch_model.bin, ...): the transformer's were
        # read by load_checked already.
        files = sorted(p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES)
        raise pickled_weights_error(
            files or [folder], exc, "Save the model with model.save(folder), which writes "
            "safetensors, or convert the file to .safetensors.") from exc
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"{spec}: sentence-transformers could not load {folder}: "
                        f"{type(exc).__name__}: {exc}") from exc


def _with_random_weights(spec: str, folder: Path, tmp: Path, seed: int) -> Path:
    """A copy of ``folder`` in ``tmp`` whose transformer has seeded random weights.

    sentence-transformers can only build a model from saved weights, so random ones are
    saved first; every other file (pooling, tokenizer, prompts) is the folder's own.
    """
    from transformers import AutoConfig, AutoModel

    copy = tmp / "model"
    shutil.copytree(folder, copy)
    for module_dir in _transformer_dirs(copy):
        if not (module_dir / "config.json").is_file():
            raise UserError(f"{spec}: cannot initialise randomly: no transformer config.json "
                            f"in {folder / module_dir.relative_to(copy)}")
        config = AutoConfig.from_pretrained(str(module_dir), local_files_only=True)
        with seeded_init(seed):
            AutoModel.from_config(config).save_pretrained(str(module_dir))
    return copy


def _transformer_dirs(folder: Path) -> list[Path]:
    """The folders of the model's transformers modules (modules.json entries, or the root)."""
    if not (folder / "modules.json").is_file():
        return [folder]
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    return [folder / m.get("path", "") for m in modules
            if str(m.get("type", "")).endswith("Transformer")]


def _drop_final_normalize(st: Any) -> bool:
    # Only a trailing Normalize is removed: one followed by Dense layers is part of the model.
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Normalize

    if len(st) > 1 and isinstance(st[len(st) - 1], Normalize):
        del st[len(st) - 1]
        return True
    return False
