"""itra-bench: evaluate and train image-text representation alignment models."""

__version__ = "0.1.0"

import pluggy as _pluggy

#: Decorate hook implementations in a plugin with ``@itra_bench.hookimpl``.
hookimpl = _pluggy.HookimplMarker("itra_bench")
