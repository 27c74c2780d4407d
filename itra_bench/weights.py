"""Weight files for model plugins: reading them safely, loading them strictly, and the
errors a user sees when weights are missing or belong to another architecture."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from itra_bench.errors import UserError

#: Keys under which training scripts commonly nest the weights inside a checkpoint dict.
NESTING_KEYS = ("state_dict", "model", "model_state_dict", "module", "network")
#: Prefixes that wrappers add to every key: DataParallel/DDP and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: TorchScript archives keep metadata entries next to the weights (OpenAI CLIP's .pt files).
_TORCHSCRIPT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
_SHOW = 5


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{name: tensor}`` dict on the CPU.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)`` (no pickled code runs), except TorchScript archives such
    as OpenAI's CLIP ``.pt`` files, which are read with ``torch.jit.load``. Checkpoints that
    nest the weights (``{"state_dict": ...}``, ``{"model": ...}``) or prefix every key
    (``module.``, ``_orig_mod.``) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        where = "it is a directory, not a file" if path.is_dir() else "no such file"
        raise UserError(f"weights file {path} cannot be read: {where}. Pass the path of a "
                        ".safetensors, .pt, .pth or .bin file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _strip_prefixes(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise UserError(f"weights file {path} is not a valid safetensors file: {exc}") from exc
    if _is_torchscript(path):
        try:
            scripted = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch.jit raises RuntimeError (and others) for bad archives
            raise UserError(f"weights file {path} looks like a TorchScript archive (a zip with "
                            "a code/ folder) but torch.jit.load cannot read it: "
                            f"{_first_line(exc)}. Pass a state dict saved with torch.save or "
                            "a .safetensors file.") from exc
        state = dict(scripted.state_dict())
        for key in _TORCHSCRIPT_EXTRA_KEYS:
            state.pop(key, None)
        return _strip_prefixes(state)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise pickled_weights_error([path], exc, "Save `model.state_dict()` instead of the "
                                    "whole model, or convert the file to .safetensors.") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"weights file {path} is not a readable PyTorch file: {exc}") from exc
    return _strip_prefixes(_unnest(obj, path))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def pickled_weights_error(files: Sequence[Path], exc: BaseException, fix: str) -> UserError:
    """The refusal of a weights file that ``torch.load(weights_only=True)`` would not read
    (pickled code or other objects than tensors), naming it (or the ``files`` it is one of)
    and saying how to ``fix`` it, without torch's advice to load it anyway."""
    which = (f"weights file {files[0]}" if len(files) == 1 else
             "one of the weights files " + ", ".join(map(str, files)))
    return UserError(f"{which} holds more than tensors (torch.load with weights_only=True "
                     f"refused it: {refusal_reason(exc)}). {fix}")


def refusal_reason(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, without torch's advice to load it
    with ``weights_only=False`` or to allowlist its classes (either would run the file's
    pickled code: not something to suggest for a file of unknown origin)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    for advice in _TORCH_ADVICE:
        text = re.sub(advice, "", text, flags=re.DOTALL)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    # "... was not an allowed global by default. Please use `torch.serialization...`": keep
    # the first sentence only.
    return re.split(r"\.\s+Please use", reason)[0].rstrip(". ")


#: What torch wraps around the unpickler's own message, by the torch versions' wordings:
#: the advice to load with weights_only=False, the ways to get there, the pointer to the docs.
_TORCH_ADVICE = (
    r"This file can still be loaded, .*?WeightsUnpickler error: ",
    r"(In PyTorch 2\.6, we changed [^\n]*?)?Re-running `torch\.load` .*?trusted source\.",
    r"Please file an issue .*?WeightsUnpickler error: ",
    r"Check the documentation of torch\.load[^\n]*",
    r"Weights only load failed\.",
)


def _is_torchscript(path: Path) -> bool:
    # TorchScript archives are zip files with a code/ folder; plain torch.save zips have none.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in name for name in zf.namelist())


def _is_flat(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unnest(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(4):  # nestings are shallow; the bound only guards against odd cycles
        if not isinstance(obj, Mapping):
            break
        if _is_flat(obj):
            return dict(obj)
        inner = next((obj[k] for k in NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    found = sorted(map(str, obj)) if isinstance(obj, Mapping) else [type(obj).__name__]
    raise UserError(
        f"weights file {path} holds no state dict: found {found[:_SHOW]} but no tensors at the "
        f"top level or under any of {list(NESTING_KEYS)}. Save `model.state_dict()`."
    )


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _first(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_SHOW])
    return shown + (", ..." if len(items) > _SHOW else "")


def load_weights_into(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                      architecture: str, suggestion: str | Callable[[], str] = "") -> None:
    """Load ``state_dict`` into ``module`` strictly: every key present, none extra, shapes equal.

    On any mismatch nothing is loaded and a :class:`UserError` says how many keys are missing,
    unexpected or of the wrong shape (with the first few of each) and, when the caller could
    tell, which architecture the weights look like (``suggestion``, or a function computing
    it, called only on a mismatch).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (file {list(state_dict[k].shape)} vs model {list(v.shape)})"
        for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        if callable(suggestion):
            suggestion = suggestion()
        raise mismatch_error(source, architecture, missing, unexpected, mismatched, suggestion)
    module.load_state_dict(state_dict, strict=True)


def mismatch_error(source: str, architecture: str, missing: Sequence[str],
                   unexpected: Sequence[str], mismatched: Sequence[str],
                   suggestion: str = "") -> UserError:
    """The error for weights that do not fit an architecture, summarising each kind of
    difference with its first few keys (``mismatched`` entries already show both shapes)."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches ({_first(mismatched)})")
    advice = suggestion or (
        f"Check that {architecture} is the architecture these weights were trained with."
    )
    return UserError(f"weights file {source} does not match architecture {architecture}: "
                     + ", ".join(parts) + ". " + advice)


def no_weights_error(spec: str, how: str) -> UserError:
    """The refusal for a model that would run with random weights without being asked to.

    ``how`` says how to give this kind of model its weights (e.g. ``@/path/weights.pt``).
    """
    return UserError(f"{spec} has no weights: pass {how}, or --random-init to evaluate random "
                     "weights on purpose")


def random_init_config(seed: int) -> dict[str, Any]:
    """The fingerprint fields that mark a randomly initialised model and its seed."""
    return {"random_init": True, "seed": seed}


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Run model construction under ``torch.manual_seed(seed)``, restoring the caller's RNG.

    Random initialisation is then the same on every build, so a random-init model's
    fingerprint names its weights; the caller's own random stream is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def state_dict_digest(module: nn.Module) -> str:
    """SHA-256 of a module's weights (names, dtypes, shapes and bytes), as hex.

    For weights that some third-party code loaded itself, so no file can be fingerprinted.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
