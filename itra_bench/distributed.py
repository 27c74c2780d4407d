"""Joining a distributed job (torchrun or SLURM; NCCL on GPUs, gloo on CPUs) and the few
collectives evaluation needs: disjoint shards, an ordered gather, agreement on the command.

One process is a world of size 1, and every function here is then a no-op, so the same code
path serves a plain run and a run under ``torchrun --nproc-per-node K``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from itra_bench.context import DEFAULT_TIMEOUT, resolve_device
from itra_bench.errors import UserError


class RankFailedError(UserError):
    """A collective gave up waiting: another rank failed, hung or is too slow."""


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes results, prediction files, checkpoints and logs."""
        return self.rank == 0


def job_environment(env: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, local_rank, world_size)`` from torchrun's variables, else SLURM's (``srun``),
    or None outside a multi-process job."""
    env = dict(os.environ) if env is None else env
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return int(env["RANK"]), int(env.get("LOCAL_RANK", "0")), int(env["WORLD_SIZE"])
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not env.get(v)]
        if missing:
            raise UserError(
                f"running under srun with {env['SLURM_NTASKS']} tasks, but {' and '.join(missing)} "
                "is not set: export them in the batch script, e.g. "
                "`export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)` "
                "and `export MASTER_PORT=29500`")
        return (int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0")),
                int(env["SLURM_NTASKS"]))
    return None


def init_distributed(device: str = "auto", timeout: float = DEFAULT_TIMEOUT) -> World:
    """Join the job this process was started in (torchrun or srun), or a world of one."""
    resolved = resolve_device(device)
    job = job_environment()
    if job is None:
        return World(device=resolved)
    rank, local_rank, size = job
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=size,
                                timeout=timedelta(seconds=timeout))
    global _steps
    _steps = itertools.count(1)
    watch_launcher(rank)
    return World(rank=rank, local_rank=local_rank, size=size, device=resolved)


#: Seconds between two looks at whether this rank's launcher is alive.
LAUNCHER_POLL_SECONDS = 0.5
#: Exit status of a rank that stopped because its launcher is gone.
LAUNCHER_GONE_EXIT = 1
_watching = False
_stop_watching = threading.Event()


def watch_launcher(rank: int) -> None:
    """Stop this process within about a second once the process that started it (torchrun's
    agent, srun's step daemon) is gone, saying so in one line on stderr; otherwise a ``kill
    -9`` of the launcher leaves its ranks working unsupervised, writing results nobody asked
    for any more."""
    global _watching
    if _watching:
        return
    _watching = True
    # A thread watching the parent pid rather than prctl(PR_SET_PDEATHSIG): that signal
    # follows the death of the parent *thread* that forked this process (torchrun may fork
    # from a helper thread that ends while the launcher lives), and its handler would run
    # only once the main thread leaves a blocking collective. The thread runs meanwhile, as
    # collectives and sleeps release the GIL.
    launcher = os.getppid()
    watcher = threading.Thread(target=_exit_when_orphaned, args=(rank, launcher),
                               name=WATCHER_THREAD, daemon=True)
    watcher.start()
    # Ended and joined at a normal exit, before the interpreter finalizes: a daemon thread
    # that wakes during finalization is ended by pthread_exit, whose forced unwinding next to
    # torch's C++ teardown can abort the process ("terminate called without an active
    # exception") after all its work is done.
    atexit.register(_end_watch, watcher)


#: Name of the thread that watches the launcher.
WATCHER_THREAD = "itra-bench launcher watch"


def _end_watch(watcher: threading.Thread) -> None:
    _stop_watching.set()
    watcher.join(timeout=5 * LAUNCHER_POLL_SECONDS)


def _exit_when_orphaned(rank: int, launcher: int) -> None:
    while os.getppid() == launcher:
        if _stop_watching.wait(LAUNCHER_POLL_SECONDS):
            return
    with contextlib.suppress(OSError):  # stderr may have gone with the launcher
        os.write(2, f"itra-bench: rank {rank}: the launcher (pid {launcher}) is gone; this "
                    "rank stops; what it completed is kept (rerun the same command to "
                    "resume).\n".encode())
    # Without unwinding: the main thread may be blocked in a collective that never returns,
    # and every file is written atomically (a half-written temp file is swept by the next
    # run).
    os._exit(LAUNCHER_GONE_EXIT)


#: Numbers the collectives this process enters; each rank records its count in the job's
#: rendezvous store under this key, so when one times out the counts tell which rank never
#: arrived.
_steps = itertools.count(1)
_STEP_KEY = "itra_bench/step/{rank}"


def _store() -> Any:
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except (ImportError, RuntimeError, ValueError):
        return None


@contextlib.contextmanager
def collective(what: str, world: World) -> Iterator[None]:
    """Mark a collective of every rank (``what`` names it in messages): when it fails or
    times out (``--dist-timeout``), the error names the ranks that never reached it and what
    each was doing last, instead of the backend's bare timeout."""
    step = next(_steps)
    store = _store()
    if store is not None:
        with contextlib.suppress(Exception):
            store.set(_STEP_KEY.format(rank=world.rank), json.dumps([step, what]))
    try:
        yield
    except (RuntimeError, dist.DistError) as exc:
        raise RankFailedError(_diagnose(step, what, world, exc)) from exc


def _diagnose(step: int, what: str, world: World, exc: BaseException) -> str:
    """Which ranks are behind this one at collective ``step``, from the store's records."""
    store = _store()
    behind: list[str] = []
    if store is not None:
        for rank in range(world.size):
            if rank == world.rank:
                continue
            try:
                if not store.check([_STEP_KEY.format(rank=rank)]):
                    behind.append(f"rank {rank} (never reached a collective)")
                    continue
                their_step, their_what = json.loads(store.get(_STEP_KEY.format(rank=rank)))
            except Exception:  # the store itself may be gone with the failed rank
                behind.append(f"rank {rank} (its state could not be read)")
                continue
            if their_step < step:
                behind.append(f"rank {rank} (last at step {their_step}: {their_what})")
    who = (", ".join(behind) + " did not arrive") if behind else \
        "another rank failed (see its error above)"
    # gloo's messages start with a source path in brackets; the reason follows it.
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", line).strip() for line in str(exc).splitlines()]
    backend = next((line for line in lines if line), type(exc).__name__)[:200]
    return (f"rank {world.rank} gave up waiting at step {step} ({what}): {who}. The job "
            "ends here; rerun the same command to resume (results and encoded chunks are "
            "kept). A rank that is merely slow needs a longer --dist-timeout "
            f"(backend error: {backend})")


def shard(n: int, world: World) -> range:
    """This rank's part of ``range(n)``: contiguous, disjoint, together exactly ``range(n)``
    (no padding, no duplicates; the first ``n % size`` ranks take one row more)."""
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return range(start, start + base + (world.rank < extra))


def gather_rows(rows: torch.Tensor, world: World, what: str = "gather rows") -> torch.Tensor:
    """Every rank's ``rows`` concatenated in rank order (ranks may hold different counts, and
    a rank with none may hold an empty tensor of any trailing shape), on every rank; with
    :func:`shard` this restores the original row order."""
    if world.size == 1:
        return rows
    device = world.device if world.device.type == "cuda" else torch.device("cpu")
    shapes = gather_objects(tuple(rows.shape), world, what)
    counts = [s[0] if s else 0 for s in shapes]
    trailing = next((s[1:] for s in shapes if s and s[0] > 0), tuple(rows.shape[1:]))
    padded = torch.zeros((max(counts), *trailing), dtype=rows.dtype, device=device)
    if counts[world.rank]:
        padded[:counts[world.rank]] = rows.to(device)
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    with collective(what, world):
        dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(rows.device)


def broadcast_from_main(value: Any, world: World, what: str = "broadcast from rank 0") -> Any:
    """Rank 0's ``value`` on every rank (picklable objects; what only rank 0 reads, such as
    cache entries, reaches the others this way)."""
    if world.size == 1:
        return value
    box = [value if world.is_main else None]
    with collective(what, world):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any, world: World, what: str = "gather objects") -> list[Any]:
    """``value`` of every rank, in rank order (small picklable objects only)."""
    if world.size == 1:
        return [value]
    out: list[Any] = [None] * world.size
    with collective(what, world):
        dist.all_gather_object(out, value)
    return out


def require_same(what: dict[str, Any], world: World) -> None:
    """Refuse, before any compute, a job whose ranks were started with different settings
    (model, tasks, data root, ...): each rank would otherwise compute a different thing."""
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
    everyone = gather_objects((digest, what), world, "compare the ranks' settings")
    differing = [r for r, (d, _) in enumerate(everyone) if d != everyone[0][0]]
    if differing:
        first = everyone[0][1]
        other = everyone[differing[0]][1]
        keys = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        raise UserError(
            f"the ranks of this job were started with different settings: rank "
            f"{differing[0]} differs from rank 0 in {', '.join(keys)} (rank 0: "
            f"{ {k: first.get(k) for k in keys} }, rank {differing[0]}: "
            f"{ {k: other.get(k) for k in keys} }). Start every rank with the same command.")
