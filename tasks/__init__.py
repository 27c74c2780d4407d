"""Built-in task plugins (mounted as itra_bench.tasks)."""
