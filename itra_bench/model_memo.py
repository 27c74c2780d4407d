"""What building a model produced (fingerprint, modalities, preprocessing, parameter counts),
remembered beside the feature cache, so that a run whose features are all cached can go
without building the model.

A description is only recalled while everything that decided it is unchanged: the spec and
options, the providing plugin and the versions of the model libraries, the environment
variables that locate caches (``HF_*``, ``TORCH_*``, ``ITRA_BENCH_*``, ``HOME``, ...), the
source files beside the builder's, and the size and modification time of every file the spec
names (folders: every file in them) and of every file the build hashed into its fingerprint,
and the plugins (at their versions) that built the model's towers.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from itra_bench.atomic_io import atomic_write_json
from itra_bench.model_api import ModelOptions
from itra_bench.paths import expand_path

#: Bumped when the description's fields change: older descriptions are then rebuilt (2: the
#: plugins that built the model's towers).
MEMO_VERSION = 2
#: Libraries whose version may change what a builder returns for the same files.
LIBRARIES = ("torch", "torchvision", "open_clip_torch", "transformers", "sentence-transformers",
             "timm", "tokenizers", "safetensors", "itra-bench")
#: Environment variables that can move where a builder finds its files (its caches, the
#: demo's folder): their values are part of the key. By prefix, and by exact name.
ENV_PREFIXES = ("ITRA_BENCH_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH_", "TIMM_",
                "OPENCLIP_", "SENTENCE_TRANSFORMERS_")
ENV_NAMES = ("HOME", "XDG_CACHE_HOME")
#: A spec naming a folder with more files than this is not remembered (stat-ing them all on
#: every run would cost what the memo saves).
MAX_WATCHED_FILES = 5_000


def memo_key(spec: str, options: ModelOptions, provider: dict[str, Any] | None,
             builder: Any) -> str:
    """The id of one way of building a model: spec, options, plugin, libraries, builder,
    and the environment variables that locate caches."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    environment = {k: v for k, v in os.environ.items()
                   if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}
    parts = {"memo": MEMO_VERSION, "spec": spec, "options": asdict(options),
             "provider": provider, "libraries": versions, "environment": environment,
             "builder": f"{getattr(builder, '__module__', '')}."
                        f"{getattr(builder, '__qualname__', '')}"}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def watched_paths(spec: str, options: ModelOptions, builder: Any) -> list[str] | None:
    """The files whose change may change the build: those the spec and ``--pretrained`` name
    (every file of a named folder) and the Python files beside the builder's source. None
    when a named folder holds more than :data:`MAX_WATCHED_FILES` files."""
    candidates = {spec, *re.split(r"[:@]", spec)}
    if options.pretrained:
        candidates.add(options.pretrained)
    files: set[str] = set()
    for text in candidates:
        if not text:
            continue
        path = Path(expand_path(text))
        if path.is_file():
            files.add(os.path.abspath(path))
        elif path.is_dir():
            for folder, _, names in os.walk(path):
                files.update(os.path.abspath(os.path.join(folder, n)) for n in names)
                if len(files) > MAX_WATCHED_FILES:
                    return None
    # A LazyFactory names where the builder lives without importing it.
    source = getattr(builder, "source_file", None)
    if source is None:
        try:
            source = inspect.getsourcefile(builder)
        except TypeError:
            source = None
    if source:
        # The builder's module and its siblings (a hook module often imports the code that
        # builds from next to it), so that editing an installed-from-source plugin counts.
        folder = os.path.dirname(os.path.abspath(source))
        files.update(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".py"))
    return sorted(files)


def file_stats(paths: list[str]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of each file (size and time None for a missing one)."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append([p, st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([p, None, None])
    return out


class ModelMemo:
    """Model descriptions by :func:`memo_key`, one JSON file each under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(expand_path(str(root)))

    def path(self, key: str) -> Path:
        """Where the description for ``key`` lives."""
        return self.root / f"{key[:32]}.json"

    def recall(self, key: str, watched: list[str],
               plugins: dict[str, dict[str, str]]) -> dict[str, Any] | None:
        """The description stored for ``key`` if every file it depends on is as it was when
        the model was built, and every plugin that built a part of it (its
        ``tower_providers``) is among ``plugins`` (name -> record) as it was; otherwise None."""
        try:
            doc = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("key") != key:
            return None
        recorded = doc.get("files")
        if not isinstance(recorded, list) or sorted(p for p, *_ in recorded) != sorted(
                set(watched) | set(doc.get("digested", []))):
            return None
        if file_stats([p for p, *_ in recorded]) != recorded:
            return None
        towers = doc.get("tower_providers")
        if not isinstance(towers, dict) or any(
                not isinstance(r, dict) or plugins.get(r.get("plugin")) != r
                for r in towers.values()):
            return None
        return doc

    def remember(self, key: str, model: Any, watched: list[str], digested: set[str]) -> None:
        """Store what building ``model`` produced (best effort: a cache that cannot be written
        only costs the next run a build)."""
        doc = {
            "key": key,
            "name": model.name,
            "fingerprint": model.fingerprint,
            "modalities": sorted(model.modalities),
            "image_transform": model.image_transform_id(),
            "dynamic_text_length": bool(getattr(model, "dynamic_text_length", False)),
            "num_parameters": model.parameter_count(),
            "num_visual_parameters": model.parameter_count(visual=True),
            "provenance": dict(getattr(model, "provenance", {}) or {}),
            "tower_providers": {part: dict(record) for part, record
                                in getattr(model, "tower_providers", {}).items()},
            "digested": sorted(digested),
            "files": file_stats(sorted(set(watched) | digested)),
        }
        try:
            json.dumps(doc)
            atomic_write_json(self.path(key), doc)
        except (OSError, TypeError, ValueError):
            pass
