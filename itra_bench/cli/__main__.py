"""``python -m itra_bench.cli`` (and ``torchrun -m itra_bench.cli``): ``itra-bench``."""

import sys

from itra_bench.cli import main

sys.exit(main())
