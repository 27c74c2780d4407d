"""itra-bench: evaluate and train image-text representation alignment models.

The public API is what ``itra_bench.__all__`` lists; everything else (``itra_bench.runner``,
``itra_bench.cli``, ...) may change without notice. Evaluate a model with
:func:`evaluate`, which returns :class:`Results`; write plugins with :data:`hookimpl` and the
contract types (:class:`EncoderModel`, :class:`ModelBuilder`, :class:`Task`,
:class:`LossSpec`, :class:`Command`, ...), and raise :class:`UserError` for input the user
can fix. A task type's fields are the keys of its task files: declare them with
:func:`file_key` and :func:`not_from_file`, read a file's mapping with :func:`read_keys`, and
list the keys with :func:`key_rows`.

Names load on first use: ``import itra_bench`` imports neither torch nor numpy.

Values:

- ``hookimpl``: the decorator of a plugin's hook implementations (``@itra_bench.hookimpl``).
- ``IMAGE``, ``TEXT``: the modality names of ``EncoderModel.modalities``.
- ``TEXT_POOLERS``: the token poolings ``--text-pooler`` chooses from (``cls``, ``mean``).
- ``PRECISIONS``: the precisions a run takes (``fp32``, ``amp_bf16``, ``amp_fp16``);
  ``PRECISION_ALIASES``: old spellings still accepted, mapped to today's names.
- ``DEFAULT_TIMEOUT``: seconds a rank of a distributed job waits for the others.
- ``BIDIRECTIONAL``, ``STUDENT_TO_TEACHER``: the values of ``LossSpec.direction``.
- ``positive_int``, ``non_negative_int``, ``positive_float``, ``non_negative_float``,
  ``seed_int``, ``unit_float``: numeric rules (:class:`Number`) usable as argparse types.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy as _pluggy

__version__ = "0.1.0"

#: Decorate hook implementations in a plugin with ``@itra_bench.hookimpl``.
hookimpl = _pluggy.HookimplMarker("itra_bench")

#: Each public name -> (its module, its name there). Loaded on first access (PEP 562), so
#: that importing the package stays quick: ``itra-bench --help`` loads no deep-learning code.
_EXPORTS: dict[str, tuple[str, str]] = {
    # Evaluating models
    "evaluate": ("itra_bench.evaluation", "evaluate"),
    "Results": ("itra_bench.evaluation", "Results"),
    "TaskScore": ("itra_bench.evaluation", "TaskScore"),
    "RunSettings": ("itra_bench.evaluation", "RunSettings"),
    "Leaderboard": ("itra_bench.leaderboard", "Leaderboard"),
    "write_leaderboard": ("itra_bench.leaderboard", "write_leaderboard"),
    "resolve_tasks": ("itra_bench.task_selection", "resolve_tasks"),
    "missing_task_data": ("itra_bench.task_checks", "missing_data"),
    "check_task_files": ("itra_bench.task_checks", "check_files"),
    "parse_model_spec": ("itra_bench.model_building", "parse_model_spec"),
    "seed_everything": ("itra_bench.runner", "seed_everything"),
    # Plugins and the registry
    "Registry": ("itra_bench.registry", "Registry"),
    "PluginInfo": ("itra_bench.registry", "PluginInfo"),
    "load_registry": ("itra_bench.registry", "load_registry"),
    "active_registry": ("itra_bench.registry", "active_registry"),
    "Command": ("itra_bench.commands", "Command"),
    "LazyFactory": ("itra_bench.lazy_import", "LazyFactory"),
    # Models
    "EncoderModel": ("itra_bench.model", "EncoderModel"),
    "ModelBuilder": ("itra_bench.model_api", "ModelBuilder"),
    "ModelOptions": ("itra_bench.model_api", "ModelOptions"),
    "IMAGE": ("itra_bench.model_api", "IMAGE"),
    "TEXT": ("itra_bench.model_api", "TEXT"),
    "TEXT_POOLERS": ("itra_bench.model_api", "TEXT_POOLERS"),
    "make_fingerprint": ("itra_bench.fingerprint", "fingerprint"),
    "files_identity": ("itra_bench.fingerprint", "files_identity"),
    "state_dict_digest": ("itra_bench.weights", "state_dict_digest"),
    "refusal_reason": ("itra_bench.weights", "refusal_reason"),
    # Tasks
    "Task": ("itra_bench.task", "Task"),
    "TaskResult": ("itra_bench.task", "TaskResult"),
    "Variant": ("itra_bench.task", "Variant"),
    "SampleOutcomes": ("itra_bench.sample_outcomes", "SampleOutcomes"),
    "Metric": ("itra_bench.metric_names", "Metric"),
    "RunContext": ("itra_bench.context", "RunContext"),
    "ImageSource": ("itra_bench.datasets.image_source", "ImageSource"),
    "ImageFiles": ("itra_bench.datasets.image_source", "ImageFiles"),
    "to_rgb": ("itra_bench.datasets.image_source", "to_rgb"),
    "DigitsSplit": ("itra_bench.datasets.digits", "DigitsSplit"),
    "captions_for": ("itra_bench.datasets.digits", "captions_for"),
    "encode_images": ("itra_bench.encoding", "encode_images"),
    "encode_texts": ("itra_bench.encoding", "encode_texts"),
    "FeatureCache": ("itra_bench.feature_cache", "FeatureCache"),
    "classification_metrics": ("itra_bench.protocols.classification_metrics",
                               "classification_metrics"),
    # Task files: the fields of a task type are their keys
    "file_key": ("itra_bench.task_fields", "file_key"),
    "not_from_file": ("itra_bench.task_fields", "not_from_file"),
    "read_keys": ("itra_bench.task_fields", "read_keys"),
    "key_rows": ("itra_bench.task_fields", "key_rows"),
    # Losses
    "LossSpec": ("itra_bench.losses", "LossSpec"),
    "BIDIRECTIONAL": ("itra_bench.losses", "BIDIRECTIONAL"),
    "STUDENT_TO_TEACHER": ("itra_bench.losses", "STUDENT_TO_TEACHER"),
    "build_loss": ("itra_bench.losses", "build_loss"),
    "check_loss_options": ("itra_bench.losses", "check_options"),
    "check_loss_factory": ("itra_bench.losses", "check_factory"),
    # Errors
    "UserError": ("itra_bench.errors", "UserError"),
    "UnknownNameError": ("itra_bench.errors", "UnknownNameError"),
    "PluginClashError": ("itra_bench.errors", "PluginClashError"),
    "PluginBugError": ("itra_bench.errors", "PluginBugError"),
    "MissingDataError": ("itra_bench.errors", "MissingDataError"),
    "CorruptImageError": ("itra_bench.errors", "CorruptImageError"),
    # Run settings and command lines
    "PRECISIONS": ("itra_bench.precision", "PRECISIONS"),
    "PRECISION_ALIASES": ("itra_bench.precision", "PRECISION_ALIASES"),
    "DEFAULT_TIMEOUT": ("itra_bench.context", "DEFAULT_TIMEOUT"),
    "default_workers": ("itra_bench.context", "default_workers"),
    "check_precision": ("itra_bench.precision", "check_precision"),
    "precision_autocast": ("itra_bench.precision", "precision_autocast"),
    "precision_arg": ("itra_bench.run_flags", "precision_arg"),
    "add_run_flag": ("itra_bench.run_flags", "add_run_flag"),
    "protocol_flag_options": ("itra_bench.run_flags", "task_options"),
    "Number": ("itra_bench.cli_types", "Number"),
    "positive_int": ("itra_bench.cli_types", "positive_int"),
    "non_negative_int": ("itra_bench.cli_types", "non_negative_int"),
    "positive_float": ("itra_bench.cli_types", "positive_float"),
    "non_negative_float": ("itra_bench.cli_types", "non_negative_float"),
    "seed_int": ("itra_bench.cli_types", "seed_int"),
    "unit_float": ("itra_bench.cli_types", "unit_float"),
    # Files
    "expand_path": ("itra_bench.paths", "expand_path"),
    "is_existing_file": ("itra_bench.paths", "is_existing_file"),
    "atomic_write": ("itra_bench.atomic_io", "atomic_write"),
    "atomic_write_text": ("itra_bench.atomic_io", "atomic_write_text"),
    "atomic_torch_save": ("itra_bench.atomic_io", "atomic_torch_save"),
    "remove_stale_temp_files": ("itra_bench.atomic_io", "remove_stale_temp_files"),
    "writing_into": ("itra_bench.atomic_io", "writing_into"),
    "load_yaml": ("itra_bench.datasets.text_files", "load_yaml"),
    "csv_records": ("itra_bench.datasets.text_files", "csv_records"),
    "check_no_nul": ("itra_bench.datasets.text_files", "check_no_nul"),
    # Data where users keep it: paths, URLs, pipe: commands
    "is_remote": ("itra_bench.transport", "is_remote"),
    "is_pipe": ("itra_bench.transport", "is_pipe"),
    "Retry": ("itra_bench.transport", "Retry"),
    "TransportError": ("itra_bench.transport", "TransportError"),
    "LocationStat": ("itra_bench.transport", "LocationStat"),
    "RemoteStream": ("itra_bench.transport", "RemoteStream"),
    "stat_location": ("itra_bench.transport", "stat_location"),
    "stat_locations": ("itra_bench.transport", "stat_locations"),
    "read_location": ("itra_bench.transport", "read_location"),
    "download_location": ("itra_bench.transport", "download_location"),
    "join_location": ("itra_bench.transport", "join_location"),
    # Processes and threads
    "World": ("itra_bench.distributed", "World"),
    "init_distributed": ("itra_bench.distributed", "init_distributed"),
    "broadcast_from_main": ("itra_bench.distributed", "broadcast_from_main"),
    "torch_threads": ("itra_bench.threads", "torch_threads"),
}

#: The public names (the keys of _EXPORTS, and hookimpl).
__all__ = [
    "hookimpl", "evaluate", "Results", "TaskScore", "RunSettings", "Leaderboard",
    "write_leaderboard", "resolve_tasks", "missing_task_data", "check_task_files",
    "parse_model_spec", "seed_everything", "Registry", "PluginInfo", "load_registry",
    "active_registry", "Command", "LazyFactory", "EncoderModel", "ModelBuilder", "ModelOptions",
    "IMAGE", "TEXT", "TEXT_POOLERS", "make_fingerprint", "files_identity", "state_dict_digest",
    "refusal_reason", "Task", "TaskResult", "Variant", "SampleOutcomes", "Metric", "RunContext",
    "ImageSource", "ImageFiles", "to_rgb", "DigitsSplit", "captions_for", "encode_images",
    "encode_texts", "FeatureCache", "classification_metrics", "file_key", "not_from_file",
    "read_keys", "key_rows", "LossSpec", "BIDIRECTIONAL",
    "STUDENT_TO_TEACHER", "build_loss", "check_loss_options", "check_loss_factory", "UserError",
    "UnknownNameError", "PluginClashError", "PluginBugError", "MissingDataError",
    "CorruptImageError", "PRECISIONS", "PRECISION_ALIASES", "DEFAULT_TIMEOUT",
    "default_workers", "check_precision", "precision_autocast", "precision_arg",
    "add_run_flag", "protocol_flag_options", "Number",
    "positive_int", "non_negative_int", "positive_float", "non_negative_float", "seed_int",
    "unit_float", "expand_path", "is_existing_file", "atomic_write", "atomic_write_text",
    "atomic_torch_save", "remove_stale_temp_files", "writing_into", "load_yaml", "csv_records",
    "check_no_nul", "is_remote", "is_pipe", "Retry", "TransportError", "LocationStat",
    "RemoteStream", "stat_location", "stat_locations", "read_location", "download_location",
    "join_location", "World", "init_distributed", "broadcast_from_main", "torch_threads",
]


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first access."""
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'itra_bench' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    """The module's names, the public ones not loaded yet included."""
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from itra_bench.atomic_io import (
        atomic_torch_save,
        atomic_write,
        atomic_write_text,
        remove_stale_temp_files,
        writing_into,
    )
    from itra_bench.cli_types import (
        Number,
        non_negative_float,
        non_negative_int,
        positive_float,
        positive_int,
        seed_int,
        unit_float,
    )
    from itra_bench.commands import Command
    from itra_bench.context import DEFAULT_TIMEOUT, RunContext, default_workers
    from itra_bench.datasets.digits import DigitsSplit, captions_for
    from itra_bench.datasets.image_source import ImageFiles, ImageSource, to_rgb
    from itra_bench.datasets.text_files import check_no_nul, csv_records, load_yaml
    from itra_bench.distributed import World, broadcast_from_main, init_distributed
    from itra_bench.encoding import encode_images, encode_texts
    from itra_bench.errors import (
        CorruptImageError,
        MissingDataError,
        PluginBugError,
        PluginClashError,
        UnknownNameError,
        UserError,
    )
    from itra_bench.evaluation import Results, RunSettings, TaskScore, evaluate
    from itra_bench.feature_cache import FeatureCache
    from itra_bench.fingerprint import files_identity
    from itra_bench.fingerprint import fingerprint as make_fingerprint
    from itra_bench.lazy_import import LazyFactory
    from itra_bench.leaderboard import Leaderboard, write_leaderboard
    from itra_bench.losses import BIDIRECTIONAL, STUDENT_TO_TEACHER, LossSpec, build_loss
    from itra_bench.losses import check_factory as check_loss_factory
    from itra_bench.losses import check_options as check_loss_options
    from itra_bench.metric_names import Metric
    from itra_bench.model import EncoderModel
    from itra_bench.model_api import IMAGE, TEXT, TEXT_POOLERS, ModelBuilder, ModelOptions
    from itra_bench.model_building import parse_model_spec
    from itra_bench.paths import expand_path, is_existing_file
    from itra_bench.precision import (
        PRECISION_ALIASES,
        PRECISIONS,
        check_precision,
        precision_autocast,
    )
    from itra_bench.protocols.classification_metrics import classification_metrics
    from itra_bench.registry import PluginInfo, Registry, active_registry, load_registry
    from itra_bench.run_flags import add_run_flag, precision_arg
    from itra_bench.run_flags import task_options as protocol_flag_options
    from itra_bench.runner import seed_everything
    from itra_bench.sample_outcomes import SampleOutcomes
    from itra_bench.task import Task, TaskResult, Variant
    from itra_bench.task_checks import check_files as check_task_files
    from itra_bench.task_checks import missing_data as missing_task_data
    from itra_bench.task_fields import file_key, key_rows, not_from_file, read_keys
    from itra_bench.task_selection import resolve_tasks
    from itra_bench.threads import torch_threads
    from itra_bench.transport import (
        LocationStat,
        RemoteStream,
        Retry,
        TransportError,
        download_location,
        is_pipe,
        is_remote,
        join_location,
        read_location,
        stat_location,
        stat_locations,
    )
    from itra_bench.weights import refusal_reason, state_dict_digest
