"""Built-in task plugins (mounted as itra_bench.tasks)."""

from pathlib import Path

#: The YAML cards of the built-in tasks whose data files are parameters.
CARDS_DIR = Path(__file__).parent / "cards"
