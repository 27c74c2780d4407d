"""Built-in model and loss plugins (mounted as itra_bench.plugins)."""
