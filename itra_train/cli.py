"""``itra-train`` (also ``itra-bench train``): parse settings, join the job, train."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from itra_bench import UserError

from .config import load_config


def main(argv: Sequence[str] | None = None, prog: str = "itra-train") -> int:
    """Entry point of the ``itra-train`` console script; returns the exit code."""
    from itra_bench import load_registry

    from .distributed import init_distributed
    from .trainer import Trainer

    console = Console(stderr=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        try:
            cfg, plugins = load_config(argv, prog)
        except SystemExit as exc:  # --help, or a usage error argparse already printed
            return exc.code if isinstance(exc.code, int) else 2
        world = init_distributed(cfg.device)
        registry = load_registry(plugins, [])
        folder = Trainer(cfg, registry, world).fit()
        if world.is_main:
            console.print(f"checkpoints in {escape(str(folder / 'checkpoints'))}; evaluate with "
                          f"`itra-bench run --model {escape(str(folder))}/checkpoints/"
                          "epoch_latest.pt --tasks ...`")
        return 0
    except UserError as exc:
        if debug:
            console.print_exception()
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; finished epochs are saved (--resume latest "
                      "continues)[/]")
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
