"""The ``itra-bench`` command line: every subcommand, built-in or a plugin's, is a
:class:`Command` that one code path turns into its parser; ``results`` writes to ``--output``
(``--out``: a deprecated alias); the run flags that commands share are declared, and their
values checked, once."""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings

import pytest
from test_cli_run import run_args

from itra_bench.cli import BUILTIN_COMMANDS, build_parser
from itra_bench.commands import Command
from itra_bench.registry import load_registry

SHARED = ("--device", "--precision", "--batch-size", "--workers", "--seed", "--data-root",
          "--skip-missing", "--dist-timeout")


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_the_builtin_commands_are_commands_in_the_help_order():
    assert list(BUILTIN_COMMANDS) == ["run", "check-data", "list", "results", "compare",
                                      "report"]
    assert all(isinstance(c, Command) and c.run is not None for c in BUILTIN_COMMANDS.values())


def test_one_parser_holds_the_builtin_and_the_plugin_commands():
    from itra_bench.cli import plugin_commands

    registry = load_registry(lazy=True)
    parser = build_parser({**BUILTIN_COMMANDS, **plugin_commands(registry)})
    for name in (*BUILTIN_COMMANDS, "watch", "train"):
        assert _subparser(parser, name) is not None


def test_a_plugin_command_named_as_a_builtin_one_is_refused(cli, tmp_path, monkeypatch):
    (tmp_path / "clashing_command.py").write_text(
        "from itra_bench import Command, hookimpl\n\n"
        "@hookimpl\n"
        "def itra_bench_commands():\n"
        "    return [Command('results', 'mine', run=lambda args, registry, console: 0)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "clashing_command", raising=False)
    res = cli("--plugin", "clashing_command", "list", "plugins")
    assert res.code == 2, res
    assert "adds the command 'results', which is a built-in itra-bench command" in res.err


def test_run_and_watch_declare_the_shared_run_flags_alike():
    from itra_bench.cli import plugin_commands

    parser = build_parser({**BUILTIN_COMMANDS, **plugin_commands(load_registry(lazy=True))})
    run, watch = _subparser(parser, "run"), _subparser(parser, "watch")
    for flag in SHARED:
        a, b = _option(run, flag), _option(watch, flag)
        assert (a.type, a.default, a.help, a.metavar) == (b.type, b.default, b.help, b.metavar)
    # compare's --seed is the same rule, with its own help.
    assert _option(_subparser(parser, "compare"), "--seed").type is _option(run, "--seed").type


def test_watch_refuses_a_batch_size_of_zero(cli, tmp_path):
    res = cli("watch", tmp_path, "--tasks", "digits-zeroshot", "--once", "--batch-size", "0")
    assert res.code == 2, res
    assert "--batch-size" in res.err and "must be an integer of at least 1, got '0'" in res.err


@pytest.fixture
def results_folder(cli, tmp_path):
    assert cli(*run_args(tmp_path, "--tasks", "digits-knn", "--no-cache")).code == 0
    return tmp_path / "out"


def test_results_writes_to_output_and_takes_out_as_a_deprecated_alias(cli, tmp_path,
                                                                      results_folder):
    res = cli("results", results_folder, "--output", tmp_path / "board")
    assert res.code == 0, res
    assert (tmp_path / "board" / "leaderboard.csv").is_file()
    assert "deprecated" not in res.err

    res = cli("results", results_folder, "--out", tmp_path / "old")
    assert res.code == 0, res
    assert (tmp_path / "old" / "leaderboard.csv").is_file()
    assert res.err.count("deprecated") == 1, res
    assert "note: --out is deprecated; use --output" in res.err
    # --help shows today's flag only.
    assert "--out " not in _subparser(build_parser(), "results").format_help()


def test_python_m_itra_bench_cli_is_the_command_line():
    out = subprocess.run([sys.executable, "-m", "itra_bench.cli", "--version"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("itra-bench "), out


def test_precision_autocast_is_the_one_mapping():
    import contextlib

    import torch

    from itra_bench.context import RunContext
    from itra_bench.precision import precision_autocast

    assert isinstance(precision_autocast("fp32", "cpu"), contextlib.nullcontext)
    x = torch.ones(2, 2)
    for precision, dtype in (("amp_bf16", torch.bfloat16), ("fp32", torch.float32)):
        with precision_autocast(precision, torch.device("cpu")):
            assert (x @ x).dtype == dtype
        with RunContext(precision=precision).autocast():
            assert (x @ x).dtype == dtype
    # The old spelling means amp_fp16 (a CUDA autocast, disabled with a warning without one).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = precision_autocast("amp", "cuda:0")
    assert isinstance(auto, torch.autocast) and auto.fast_dtype == torch.float16
