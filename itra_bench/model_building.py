"""Build the model a run names: its spec parsed, ``--pretrained`` checked, its fingerprint
extended with what else changes its features, and a lazy stand-in when its build is cached."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from itra_bench.errors import PluginBugError, UnknownNameError, UserError
from itra_bench.fingerprint import recording_digests
from itra_bench.lazy_model import LazyModel
from itra_bench.model import EncoderModel, ModelOptions
from itra_bench.model_memo import ModelMemo, memo_key, watched_paths
from itra_bench.paths import expand_path
from itra_bench.registry import PluginInfo, Registry

if TYPE_CHECKING:
    from rich.console import Console

    from itra_bench.runner import RunConfig


def parse_model_spec(spec: str, registry: Registry) -> tuple[str, str]:
    """Split a model spec into (scheme, rest): ``scheme:rest``, a bare ``scheme``, or a
    checkpoint file handled by the ``checkpoint`` scheme when a plugin provides it."""
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in registry.models:
        return scheme, rest
    if not sep and spec in registry.models:
        return spec, ""
    if Path(expand_path(spec)).is_file() and "checkpoint" in registry.models:
        return "checkpoint", spec
    raise UnknownNameError(
        "model scheme", scheme if sep else spec, registry.models,
        hint="A model spec is SCHEME:NAME (e.g. openclip:ViT-B-32@/path/weights.pt) or a "
             "bare scheme such as `demo`.")


def check_pretrained(config: RunConfig, registry: Registry) -> None:
    """Refuse ``--pretrained`` naming no file, or given for a model whose builder does not
    load it (its weights would be ignored without a word)."""
    if not config.pretrained:
        return
    path = Path(expand_path(config.pretrained))
    if not path.is_file():
        raise UserError(f"--pretrained {path}: no such file; give the path of a local weights "
                        "file")
    scheme, _ = parse_model_spec(config.model, registry)
    provided = registry.models[scheme]
    if not getattr(provided.item, "takes_pretrained", False):
        takers = sorted(name for name, p in registry.models.items()
                        if getattr(p.item, "takes_pretrained", False))
        raise UserError(f"--pretrained {path}: model scheme {scheme!r} "
                        f"({provided.plugin.describe()}) does not load a weights file, so it "
                        "would be ignored. Drop --pretrained, or use a scheme that loads one: "
                        f"{', '.join(takers) or 'none is installed'}.")


def effective_fingerprint(model: EncoderModel, provider: PluginInfo | None,
                          pooler: str | None) -> str:
    """The id that keys a model's cached features and result folder: the builder's own
    fingerprint (weights and config) plus what else changes the features: the providing
    plugin, its distribution and version, and the pooler option. (The image transform and
    the precision key each cache entry separately.)"""
    parts = {"model": model.fingerprint, "pooler": pooler,
             "provider": provider.as_record() if provider else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def require_fingerprint(model: EncoderModel, spec: str, provider: PluginInfo | None) -> None:
    """Refuse a model whose builder left ``fingerprint`` empty (it would share cached
    features with any other such model)."""
    if not isinstance(model, EncoderModel):
        who = provider.describe() if provider else "the caller"
        raise PluginBugError(f"{who} built {spec!r} as a {type(model).__name__}, not an "
                             "itra_bench.model.EncoderModel")
    if not model.fingerprint:
        who = provider.describe() if provider else "the caller"
        raise UserError(
            f"model {spec!r} has no fingerprint: {who} must set `fingerprint` on the model it "
            "builds to a stable id of everything that changes its features (weights, config, "
            "version), e.g. itra_bench.fingerprint.fingerprint(config, [weights_file]). "
            "Without it two different models would share cached features.")


def build_model(config: RunConfig, registry: Registry, memo: ModelMemo | None = None,
                console: Console | None = None) -> EncoderModel:
    """Build the model named by ``config.model`` on the CPU, with its effective fingerprint
    and its provider (``model.provider``).

    With a ``memo``, a builder that declares itself ``lazy`` is remembered: when the files
    that decided an earlier build are unchanged, a :class:`LazyModel` stands in for the model
    and the build happens only if a feature is missing from the cache."""
    scheme, rest = parse_model_spec(config.model, registry)
    options = ModelOptions(pretrained=config.pretrained, random_init=config.random_init,
                           text_pooler=config.text_pooler, cache_dir=config.weights_cache,
                           seed=config.seed)
    provided = registry.models[scheme]

    def build() -> tuple[EncoderModel, set[str]]:
        with recording_digests() as digested:
            model = registry.build_model(scheme, rest, options)
        require_fingerprint(model, config.model, provided.plugin)
        model.name = config.model
        model.fingerprint = effective_fingerprint(model, provided.plugin, config.text_pooler)
        model.provider = provided.plugin
        return model, digested

    watched = None
    if memo is not None and getattr(provided.item, "lazy", False):
        key = memo_key(config.model, options, provided.plugin.as_record(), provided.item.build)
        watched = watched_paths(config.model, options, provided.item.build)
    if watched is None:
        return build()[0]

    def build_and_remember() -> EncoderModel:
        model, digested = build()
        memo.remember(key, model, watched, digested)
        return model

    known = memo.recall(key, watched, {name: info.as_record()
                                       for name, info in registry.plugins.items()})
    if known is None:
        return build_and_remember()

    def announce() -> None:
        if console is not None:
            console.print(f"building {escape(config.model)} (a feature is not in the cache)")

    model = LazyModel(known, build_and_remember, on_build=announce)
    model.provider = provided.plugin
    return model
