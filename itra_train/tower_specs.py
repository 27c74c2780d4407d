"""A tower's setting, ``--image-tower`` / ``--text-tower``: an itra-bench model spec
``SCHEME:REST`` (``openclip:RN50@openai``, ``timm:resnet18``, ``hf:PATH``, a plugin's own
scheme), as ``itra-bench run --model`` and ``--teacher`` take it.

Before these flags, a tower took three settings (``--image-model-builder``,
``--image-model``, ``--image-model-tag``); :func:`spec_from_parts` turns them into the spec,
so that old flags, old settings files and old checkpoints still describe the same model.

Torch-free: the settings are read before anything is built.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from rich.console import Console
from rich.markup import escape

from itra_bench import UserError

#: Schemes whose spec is ``NAME[@WEIGHTS]``: the weights load only with
#: ``--pretrained-*-model``.
WEIGHTED_SCHEMES = ("openclip", "timm", "torchvision")
#: Schemes that read no tag of the old three-flag form (the model is a folder).
UNTAGGED_SCHEMES = ("hf", "sbert")
#: Old spellings of schemes, still accepted.
SCHEME_ALIASES = {"huggingface": "hf"}
#: The settings of a tower before ``--*-tower``: builder (the scheme), model, tag.
OLD_KEYS = {side: (f"{side}_model_builder", f"{side}_model", f"{side}_model_tag")
            for side in ("image", "text")}


def split_spec(spec: str) -> tuple[str, str]:
    """``(scheme, rest)`` of a tower spec, an old spelling of the scheme renamed."""
    scheme, _, rest = spec.partition(":")
    return SCHEME_ALIASES.get(scheme, scheme), rest


def normalise_spec(spec: str) -> str:
    """The spec with today's name of its scheme (``huggingface:X`` is ``hf:X``)."""
    scheme, rest = split_spec(spec)
    return f"{scheme}:{rest}" if ":" in spec else scheme


def build_spec(spec: str, load_weights: bool) -> tuple[str, str]:
    """``(scheme, rest)`` to build the tower of ``spec``: without ``load_weights`` (a
    random initialisation, or a checkpoint's weights to be loaded over it) the weights
    part of the spec is dropped, so that no weights file is read."""
    scheme, rest = split_spec(spec)
    if load_weights:
        return scheme, rest
    if scheme in WEIGHTED_SCHEMES:
        return scheme, rest.partition("@")[0]
    if scheme == "torchhub":
        repo, sep, entry = rest.rpartition(":")
        return scheme, f"{repo}{sep}{entry.partition('@')[0]}"
    return scheme, rest


def spec_parts(spec: str) -> tuple[str, str, str]:
    """The old three settings ``(builder, model, tag)`` of a tower spec."""
    scheme, rest = split_spec(spec)
    if scheme in WEIGHTED_SCHEMES:
        model, _, tag = rest.partition("@")
    elif scheme == "torchhub" and ":" in rest:
        model, _, tag = rest.rpartition(":")
    else:
        model, tag = rest, ""
    return scheme, model, tag


def spec_from_parts(builder: str, model: str, tag: str, side: str) -> str:
    """The tower spec of the old three settings of ``side``'s tower (``image``/``text``);
    a combination they never accepted is refused as they refused it."""
    scheme = SCHEME_ALIASES.get(builder, builder)
    if scheme == "torchhub":
        if not tag:
            raise UserError(f"--{side}-model-builder torchhub needs --{side}-model-tag "
                            f"ENTRYPOINT (and --{side}-model REPO, e.g. "
                            f"facebookresearch/dino:main); or give --{side}-tower "
                            "torchhub:REPO:ENTRYPOINT")
        return f"{scheme}:{model}:{tag}"
    if scheme in WEIGHTED_SCHEMES and tag:
        return f"{scheme}:{model}@{tag}"
    if tag and scheme not in UNTAGGED_SCHEMES:
        raise UserError(f"--{side}-model-tag {tag!r}: the {scheme} scheme takes no tag; give "
                        f"the whole spec as --{side}-tower {scheme}:SPEC")
    return f"{scheme}:{model}"


def model_name(spec: str) -> str:
    """The model a tower spec names, without scheme or weights (what a run's default name
    is made of): ``RN50`` of ``openclip:RN50@openai``."""
    return spec_parts(spec)[1]


def _spelled(key: str, prefix: str) -> str:
    """A setting as its source spells it: the flag (``prefix`` ``--``) or the YAML key."""
    return "--" + key.replace("_", "-") if prefix else key


def take_old_towers(values: MutableMapping[str, Any], prefix: str,
                    where: str | None = None) -> dict[str, dict[str, str]]:
    """Remove a tower's old settings from ``values`` (the flags or a YAML file's keys, as
    ``prefix`` says): ``{side: {old key: value}}`` for each side that has some. A source
    giving both a side's ``*_tower`` and its old settings is refused."""
    old: dict[str, dict[str, str]] = {}
    for side, keys in OLD_KEYS.items():
        given = {key: values.pop(key) for key in keys if key in values}
        if not given:
            continue
        at = f"{where}: " if where else ""
        tower = f"{side}_tower"
        if tower in values:
            raise UserError(f"{at}give {_spelled(tower, prefix)} or the deprecated "
                            f"{', '.join(_spelled(k, prefix) for k in given)}, not both")
        for key, value in given.items():
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise UserError(f"{at}{_spelled(key, prefix)} must be a string, got {value!r}")
        old[side] = {key: str(value) for key, value in given.items()}
    return old


def apply_old_towers(cfg: MutableMapping[str, Any], old: Mapping[str, Mapping[str, str]],
                     prefix: str) -> list[str]:
    """Set each side's tower from its old settings in ``old``, over the parts of the tower
    ``cfg`` holds (a file's tower, changed by old flags); returns the old settings used,
    spelled as their source spells them."""
    used = []
    for side, given in old.items():
        parts = dict(zip(OLD_KEYS[side], spec_parts(cfg[f"{side}_tower"]), strict=True))
        parts.update(given)
        cfg[f"{side}_tower"] = spec_from_parts(*parts.values(), side)
        used += [_spelled(key, prefix) for key in given]
    return used


def note_old_towers(used: list[str], cfg: MutableMapping[str, Any]) -> None:
    """One note on stderr: the deprecated tower settings used, and what replaces them."""
    sides = [side for side in OLD_KEYS if any(side in name for name in used)]
    towers = " ".join(f"--{side}-tower {cfg[f'{side}_tower']}" for side in sides)
    keys = ", ".join(f"{side}_tower" for side in sides)
    names = used[0] if len(used) == 1 else f"{', '.join(used[:-1])} and {used[-1]}"
    Console(stderr=True).print(
        f"[yellow]note[/]: {escape(names)} {'is' if len(used) == 1 else 'are'} "
        f"deprecated: give each tower as one model spec, here {escape(towers)} (in a --config "
        f"file: {keys})", highlight=False)


def upgrade_towers(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings recorded before the ``*_tower`` settings (a checkpoint's), with each side's
    old three settings turned into its tower spec; a copy, settings that hold a tower spec
    already are kept as they are."""
    out = dict(values)
    for side, keys in OLD_KEYS.items():
        given = {key: str(out.pop(key)) for key in keys if key in out}
        if given and f"{side}_tower" not in out:
            # A setting the record lacks had its default of the time.
            parts = {**dict(zip(keys, ("openclip", "RN50", ""), strict=True)), **given}
            out[f"{side}_tower"] = spec_from_parts(*parts.values(), side)
    return out
