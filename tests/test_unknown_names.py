"""Messages about a misspelt name: the `itra-bench list` word for its kind, and a count of
what that listing shows."""

from __future__ import annotations

import pytest

from itra_bench.errors import UnknownNameError
from itra_bench.registry import load_registry


def test_an_unknown_loss_points_to_list_losses():
    registry = load_registry()
    with pytest.raises(UnknownNameError) as info:
        registry.loss("infonse")
    message = str(info.value)
    assert "`itra-bench list losses`" in message, message
    assert "losss" not in message
    assert f"{len(registry.losses)} losses" in message, message


def test_a_misspelt_task_counts_what_list_tasks_shows(cli):
    registry = load_registry()
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks",
              "no-such-tsk", "--output", "unused")
    assert res.code == 2, res
    tasks, suites, aliases = len(registry.tasks), len(registry.suites), len(registry.aliases)
    total = tasks + suites + aliases
    assert f"{total} available" not in res.err, res.err
    assert f"{tasks} tasks" in res.err, res.err
    assert f"{suites} suites" in res.err, res.err
    assert "`itra-bench list tasks`" in res.err, res.err


def test_a_kind_without_a_listing_says_no_list_command():
    message = str(UnknownNameError("dataset", "cifar-11", ["cifar-10", "cifar-100"]))
    assert "itra-bench list" not in message, message
    assert "2 datasets" in message, message
