"""An example third-party itra-bench plugin.

The hooks live in :mod:`itra_bench_example_plugin.plugin`, which the package's
``[project.entry-points.itra_bench]`` table names; the model, loss and task they return live
in the sibling modules.
"""

__version__ = "0.1.0"
