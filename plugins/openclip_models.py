"""``openclip:`` models: OpenCLIP dual encoders with weights from local files or the local cache.

Spec forms (``--pretrained`` wins over the part after ``@``)::

    openclip:ViT-B-32@/path/weights.pt     built-in architecture, local weights file
    openclip:ViT-B-32@laion2b_s34b_b79k    an OpenCLIP pretrained tag, from the local cache only
    openclip:/path/config.json@/path/w.pt  custom architecture (embed_dim, vision_cfg, text_cfg)
    openclip:/path/folder                  a folder with open_clip_config.json and its weights
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import logging
import os
import re
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
    load_state_dict_file,
    load_weights_into,
    no_weights_error,
    random_init_config,
    seeded_init,
)

from .image_backbone import CHANNELS_LAST, is_convolutional

SCHEME = "openclip"
#: Files an OpenCLIP folder (as on the HF hub) keeps its weights in, most preferred first.
FOLDER_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin",
                  "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin")
FOLDER_CONFIG = "open_clip_config.json"
#: Architectures shipped with itra-bench (the demo's), registered with open_clip by name.
PACKAGED_CONFIGS = Path(__file__).parent / "model_configs"


def register_packaged_configs(open_clip: Any) -> None:
    """Make the architectures in :data:`PACKAGED_CONFIGS` known to open_clip by file stem."""
    if not any(p.stem in open_clip.list_models() for p in PACKAGED_CONFIGS.glob("*.json")):
        open_clip.add_model_config(PACKAGED_CONFIGS)


class OpenCLIPEncoder(EncoderModel):
    """An OpenCLIP model (CLIP, CustomTextCLIP or CoCa) seen through the EncoderModel contract."""

    modalities = frozenset({IMAGE, TEXT})

    def __init__(self, clip: nn.Module, tokenizer: Callable[[list[str]], torch.Tensor],
                 image_transform: Callable[[Any], torch.Tensor], fingerprint: str) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.fingerprint = fingerprint
        self._causal = _causal_text_tower(clip)
        #: Texts run at the length their pooled token needs (see ``encode_text``).
        self.dynamic_text_length = self._causal is not None
        #: A convolutional image tower (ModifiedResNet, ConvNeXt) runs in channels_last, about
        #: 20 % less CPU per image for RN50 (benchmarks/bench_precision.py); the builder puts
        #: the layout into the fingerprint.
        self.channels_last = is_convolutional(clip.visual)
        if self.channels_last:
            clip.visual.to(memory_format=torch.channels_last)

    def visual_parameters(self) -> Iterator[nn.Parameter]:
        """The image tower's parameters (``clip.visual``)."""
        return self.clip.visual.parameters()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Embed preprocessed images ``[B, 3, H, W]`` into ``[B, D]`` (not normalised)."""
        images = images.to(self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.clip.encode_image(images, normalize=False)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Embed strings into ``[B, D]`` with the architecture's own tokenizer (not normalised).

        The tokenizer pads every text to the context length (77 for CLIP). Where the text
        tower attends causally and pools one token, that token's features depend on the tokens
        up to it alone, so the batch runs only that far: the same features as the full length
        (to float rounding) for a fraction of the work. Other towers run at full length.
        """
        tokens = self.tokenizer(list(texts)).to(self.device)
        if self._causal is None or not self.dynamic_text_length:
            return self.clip.encode_text(tokens, normalize=False)
        return self._causal.encode(tokens)


class _CausalTextTower:
    """The text half of an OpenCLIP model whose pooled token sees only the tokens before it:
    causal attention, pooling at one position (``argmax``, ``eos`` or ``first``) and no
    appended class token. ``encode`` repeats open_clip's text forward pass on the tokens up
    to the last pooled position of the batch."""

    def __init__(self, tower: nn.Module, pool_type: str, eos_id: int | None) -> None:
        self.tower = tower
        self.pool_type = pool_type
        self.eos_id = eos_id

    def pooled_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """The position each row's features are pooled from (as open_clip's
        ``text_global_pool`` picks it)."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        return torch.zeros(len(tokens), dtype=torch.long, device=tokens.device)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.tower
        pooled_at = self.pooled_positions(tokens)
        length = int(pooled_at.max()) + 1 if len(tokens) else 1
        tokens = tokens[:, :length]
        cast_dtype = t.transformer.get_cast_dtype()
        x = t.token_embedding(tokens).to(cast_dtype)
        x = x + t.positional_embedding[:length].to(cast_dtype)
        x = t.transformer(x, attn_mask=t.attn_mask[:length, :length])
        x = t.ln_final(x)
        x = x[torch.arange(len(x), device=x.device), pooled_at]
        if t.text_projection is not None:
            x = t.text_projection(x) if isinstance(t.text_projection, nn.Linear) \
                else x @ t.text_projection
        return x


def _causal_text_tower(clip: nn.Module) -> _CausalTextTower | None:
    """The model's text tower as a :class:`_CausalTextTower`, or None where running a batch
    short of the context length would change its features (bidirectional attention, pooling
    at the last position, an appended class token, a Hugging Face text tower)."""
    if hasattr(clip, "text_pool_type") and hasattr(clip, "token_embedding"):  # open_clip.CLIP
        tower, pool_type, eos_id = clip, clip.text_pool_type, getattr(clip, "text_eos_id", None)
    else:  # CustomTextCLIP / CoCa: the tower is clip.text, and only a TextTransformer qualifies
        tower = getattr(clip, "text", None)
        if type(tower).__name__ != "TextTransformer" or getattr(tower, "cls_emb", 1) is not None \
                or getattr(tower, "use_pad_mask", True):
            return None
        pool_type, eos_id = tower.pool_type, getattr(tower, "eos_id", None)
    needed = ("transformer", "token_embedding", "positional_embedding", "ln_final",
              "text_projection")
    if not all(hasattr(tower, name) for name in needed) \
            or getattr(tower, "attn_mask", None) is None \
            or pool_type not in ("argmax", "eos", "first") \
            or (pool_type == "eos" and eos_id is None):
        return None
    return _CausalTextTower(tower, pool_type, eos_id)


def build_openclip(rest: str, options: ModelOptions) -> OpenCLIPEncoder:
    """Build ``openclip:ARCH[@WEIGHTS]`` on the CPU in eval mode (see the module docstring)."""
    import open_clip

    spec = f"{SCHEME}:{rest}"
    register_packaged_configs(open_clip)
    arch, _, at_part = (expand_path(part) for part in rest.partition("@"))
    if not arch:
        raise UserError(f"{spec}: name an architecture, e.g. openclip:ViT-B-32@/path/weights.pt "
                        f"(known: {', '.join(open_clip.list_models()[:8])}, ...)")
    source = _ArchSource.resolve(arch, open_clip)
    cache_dir = options.cache_dir
    ref = options.pretrained or at_part or source.folder_weights or ""

    weights_file: Path | None = None
    tag_cfg: dict[str, Any] = {}
    if ref:
        if Path(ref).is_file() or source.builtin is None:
            weights_file = Path(ref)
        elif open_clip.is_pretrained_cfg(source.builtin, ref):
            tag_cfg = open_clip.get_pretrained_cfg(source.builtin, ref)
            weights_file = _cached_tag_file(source.builtin, ref, tag_cfg, cache_dir)
        elif _looks_like_path(ref):
            weights_file = Path(ref)  # load_state_dict_file names the missing file
        else:
            tags = open_clip.list_pretrained_tags_by_model(source.builtin)
            raise UserError(
                f"{spec}: {ref!r} is neither a weights file nor a pretrained tag of "
                f"{source.builtin} (its tags: {', '.join(tags) or 'none'})"
            )
    elif not options.random_init:
        raise no_weights_error(
            spec, f"a local weights file as openclip:{arch}@/path/weights.pt or with "
                  "--pretrained /path/weights.pt (or a cached pretrained tag, openclip:ARCH@TAG)")

    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                  if k in tag_cfg}
    with seeded_init(options.seed), _quiet_random_init_warning():
        clip, transform, tokenizer = source.create(open_clip, quick_gelu, preprocess, cache_dir)
    if weights_file is not None:
        state = _adapt_state_dict(clip, load_state_dict_file(weights_file))
        load_weights_into(clip, state, str(weights_file), source.label,
                          suggestion=lambda: _suggest_architecture(state, weights_file,
                                                                   open_clip))

    config: dict[str, Any] = {
        "scheme": SCHEME,
        "arch": source.builtin or source.model_cfg,
        "quick_gelu": quick_gelu or bool(source.model_cfg.get("quick_gelu", False)),
        "preprocess": dict(clip.visual.preprocess_cfg),
    }
    if weights_file is None:
        config.update(random_init_config(options.seed))
    files = [weights_file] if weights_file is not None else []
    if is_convolutional(clip.visual):
        config.update(CHANNELS_LAST)
    model = OpenCLIPEncoder(clip, tokenizer, transform, fingerprint(config, files))
    model.name = spec
    return model.eval()


class _ArchSource:
    """Where an architecture comes from: a built-in name, a JSON config file or a folder."""

    def __init__(self, label: str, builtin: str | None, model_cfg: dict[str, Any],
                 preprocess_cfg: dict[str, Any], folder: Path | None,
                 folder_weights: str | None) -> None:
        self.label = label
        self.builtin = builtin
        self.model_cfg = model_cfg
        self.preprocess_cfg = preprocess_cfg
        self.folder = folder
        self.folder_weights = folder_weights

    @classmethod
    def resolve(cls, arch: str, open_clip: Any) -> _ArchSource:
        if arch in open_clip.list_models():
            return cls(arch, arch, open_clip.get_model_config(arch), {}, None, None)
        path = Path(arch)
        if path.is_dir():
            config_file = path / FOLDER_CONFIG
            if not config_file.is_file():
                raise UserError(f"openclip:{arch}: folder {path} has no {FOLDER_CONFIG}. An "
                                "OpenCLIP folder holds open_clip_config.json (with model_cfg) "
                                "and its weights, e.g. open_clip_model.safetensors.")
            doc = _read_json(config_file)
            if "model_cfg" not in doc:
                raise UserError(f"{config_file}: no 'model_cfg' key; expected "
                                '{"model_cfg": {...}, "preprocess_cfg": {...}}')
            weights = next((str(path / f) for f in FOLDER_WEIGHTS if (path / f).is_file()), None)
            return cls(str(path), None, _check_model_cfg(doc["model_cfg"], config_file),
                       doc.get("preprocess_cfg", {}), path, weights)
        if path.suffix == ".json" or path.is_file():
            if not path.is_file():
                raise UserError(f"openclip:{arch}: model config file {path} does not exist")
            doc = _read_json(path)
            model_cfg = doc.get("model_cfg", doc)
            return cls(str(path), None, _check_model_cfg(model_cfg, path),
                       doc.get("preprocess_cfg", {}), None, None)
        if arch.startswith("hf-hub:"):
            raise UserError(f"openclip:{arch}: hub models are not downloaded at run time. "
                            "Download the repository on a machine with network and use "
                            "openclip:/path/to/that/folder.")
        if _looks_like_path(arch):
            raise UserError(f"openclip:{arch}: no such model config file or folder: {path}")
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"openclip:{arch}: unknown OpenCLIP architecture.{hint} Give a name "
                        "from open_clip.list_models(), a model config .json or an OpenCLIP "
                        "folder.")

    def create(self, open_clip: Any, quick_gelu: bool, preprocess: dict[str, Any],
               cache_dir: str | None) -> tuple[nn.Module, Callable[[Any], torch.Tensor], Any]:
        """The model with random weights, its eval transform and its tokenizer."""
        try:
            if self.builtin is not None or self.folder is not None:
                name = self.builtin or f"local-dir:{self.folder}"
                clip, _, transform = open_clip.create_model_and_transforms(
                    name, pretrained=None, load_weights=False, pretrained_text=False,
                    force_quick_gelu=quick_gelu, image_mean=preprocess.get("mean"),
                    image_std=preprocess.get("std"),
                    image_interpolation=preprocess.get("interpolation"),
                    image_resize_mode=preprocess.get("resize_mode"), cache_dir=cache_dir)
                tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
                return clip, transform, tokenizer
            return _create_from_config(open_clip, self.model_cfg, self.preprocess_cfg, cache_dir)
        except (OSError, ValueError, RuntimeError) as exc:
            # Towers or tokenizers that open_clip takes from the HF hub fail here when offline.
            raise UserError(f"openclip:{self.label}: open_clip could not build this architecture "
                            f"offline: {type(exc).__name__}: {exc}") from exc


class _DropRecords(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    # open_clip warns on the root logger that the model is random; here the weights are
    # loaded right after (or random init was asked for), so the warning would mislead.
    root = logging.getLogger()
    drop = _DropRecords("No pretrained weights loaded")
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _create_from_config(open_clip: Any, model_cfg: dict[str, Any], preprocess_cfg: dict[str, Any],
                        cache_dir: str | None) -> tuple[nn.Module, Any, Any]:
    # Mirrors open_clip.create_model's class choice for configs that are not registered by name
    # (registering them would shadow built-ins of the same file name for the whole process).
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    cfg = copy.deepcopy(model_cfg)
    vision_cfg, text_cfg = cfg["vision_cfg"], cfg["text_cfg"]
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False
    if "hf_model_name" in text_cfg:
        text_cfg["hf_model_pretrained"] = False
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in text_cfg
    if custom_text:
        cls = open_clip.CoCa if "multimodal_cfg" in cfg else open_clip.CustomTextCLIP
    else:
        cls = open_clip.CLIP
    clip = cls(**cfg)
    pp = merge_preprocess_dict(PreprocessCfg(), preprocess_cfg)
    pp["size"] = clip.visual.image_size
    open_clip.set_model_preprocess_cfg(clip, pp)
    transform = image_transform_v2(PreprocessCfg(**pp), is_train=False)
    context_length = text_cfg.get("context_length", 77)
    if text_cfg.get("hf_tokenizer_name"):
        tokenizer = HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=context_length,
                                cache_dir=cache_dir,
                                tokenizer_mode=text_cfg.get("tokenizer_mode"),
                                **text_cfg.get("tokenizer_kwargs", {}))
    else:
        tokenizer = SimpleTokenizer(context_length=context_length,
                                    **text_cfg.get("tokenizer_kwargs", {}))
    return clip, transform, tokenizer


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON model config: {exc}") from exc
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a model config must be a JSON object")
    return doc


def _check_model_cfg(cfg: Any, path: Path) -> dict[str, Any]:
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise UserError(f"{path}: OpenCLIP model config lacks {', '.join(missing)}; it needs "
                        "embed_dim, vision_cfg and text_cfg (see open_clip/model_configs/*.json)")
    return cfg


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith((".pt", ".pth", ".bin", ".safetensors",
                                                           ".json", ".npz"))


def _cached_tag_file(arch: str, tag: str, tag_cfg: dict[str, Any], cache_dir: str | None) -> Path:
    """The local file of an OpenCLIP pretrained tag, found without any network access."""
    looked = []
    if tag_cfg.get("file"):
        return Path(tag_cfg["file"])
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import constants, try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors",
                                             "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")  # open_clip prefers these too
        for name in names:
            hit = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
        looked.append(f"the Hugging Face cache {cache_dir or constants.HF_HUB_CACHE} "
                      f"(repo {repo_id}, file {' or '.join(names)})")
    url = tag_cfg.get("url", "")
    if url:
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return path
        looked.append(str(path))
    raise UserError(
        f"openclip:{arch}@{tag}: the weights of pretrained tag {tag!r} are not in the local cache "
        f"(looked in {'; '.join(looked) or 'nowhere: the tag names no source'}). Nothing is "
        f"downloaded at run time. On a machine with network run `python -c \"import open_clip; "
        f"open_clip.create_model('{arch}', pretrained='{tag}')\"` and copy its cache here (or "
        f"point --cache-dir at it), or pass a local weights file: openclip:{arch}@/path/weights"
    )


def _adapt_state_dict(clip: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The layout changes open_clip.load_checkpoint also undoes, so files written by older
    # open_clip versions load; anything else must match exactly.
    from open_clip.model import convert_to_custom_text_state_dict

    if "positional_embedding" in state and not hasattr(clip, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        own = getattr(clip, key, None)
        if key in state and isinstance(own, torch.Tensor) and state[key].ndim != own.ndim:
            state[key] = state[key].reshape(own.shape)
    state.pop("text.transformer.embeddings.position_ids", None)
    return state


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def _suggest_architecture(state: dict[str, torch.Tensor], weights: Path, open_clip: Any) -> str:
    """Name the built-in ViT architectures whose shapes match ``state`` (empty if none)."""
    try:
        conv = state["visual.conv1.weight"]
        vis_pos = state["visual.positional_embedding"]
        tok = state["token_embedding.weight"]
        txt_pos = state["positional_embedding"]
        proj = state["text_projection"]
    except KeyError:
        return ""
    patch = conv.shape[-1]
    shape = {
        "embed_dim": proj.shape[1], "width": conv.shape[0], "patch_size": patch,
        "image_size": round((vis_pos.shape[0] - 1) ** 0.5) * patch,
        "layers": _count_blocks(state, "visual.transformer.resblocks."),
        "text_width": tok.shape[1], "context_length": txt_pos.shape[0],
        "text_layers": _count_blocks(state, "transformer.resblocks."),
    }
    matches = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name)
        v, t = cfg["vision_cfg"], cfg["text_cfg"]
        known = {
            "embed_dim": cfg["embed_dim"], "width": v.get("width"),
            "patch_size": v.get("patch_size"), "image_size": v.get("image_size"),
            "layers": v.get("layers"), "text_width": t.get("width"),
            "context_length": t.get("context_length", 77), "text_layers": t.get("layers"),
        }
        if known == shape:
            matches.append(name)
    if not matches:
        return ""
    return (f"These weights look like OpenCLIP architecture {' or '.join(matches[:4])}: try "
            f"openclip:{matches[0]}@{weights}.")
