"""Training data: WebDataset tar shards (open_clip's ``--dataset-type webdataset``).

Each sample is the run of consecutive tar members sharing a key, grouped as the
``webdataset`` library groups them (``000042.jpg`` and ``000042.txt``): its image is the
first of ``jpg``, ``jpeg``, ``png``, ``webp`` present, its caption the ``txt`` member.

An epoch is ``--train-num-samples`` samples, cut into the same number of batches on every
rank so DDP's processes stay in step. Without ``--dataset-resampled`` the shards are shuffled
by (seed, epoch), dealt to the ranks, then to each rank's DataLoader workers, so no two
workers read the same shard in an epoch; with it, each worker draws shards with replacement
from a generator seeded by (seed, epoch, rank, worker). Either way an epoch's data depends
only on the seed and the epoch number, so a resumed run reads what an uninterrupted one does.

Shards are local files, or locations the host's transport reads (``http(s)://`` and other
fsspec URLs, ``pipe:COMMAND``): a remote shard is streamed once from start to end, with
retries that resume where a read stopped, so it yields the same bytes, and the same
training, as the local file.
"""

from __future__ import annotations

import io
import random
import re
import tarfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from braceexpand import braceexpand
from PIL import Image, UnidentifiedImageError
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import base_plus_ext

from itra_bench import (
    MissingDataError,
    RemoteStream,
    Retry,
    TransportError,
    UserError,
    is_pipe,
    is_remote,
    stat_locations,
    to_rgb,
)

from .data import Batch, DecodeFailure, collate

#: Image members, in the order they are looked for.
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
CAPTION_KEY = "txt"
#: Names that ``--dataset-type auto`` takes for shards.
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: Samples held in each worker's shuffle buffer (shards are read in order, so samples are
#: mixed across neighbouring shards here).
SHUFFLE_BUFFER = 2000
#: Bits of a sample id that hold its position in its shard; the rest hold the shard number.
POSITION_BITS = 32
_BLOCK = 512
#: Bytes a remote shard is read ahead by: one transport call per megabyte rather than two
#: or three per sample (a call crosses to fsspec's event-loop thread).
_REMOTE_BUFFER = 1 << 20
_WORD = re.compile(r"\S+")


def looks_like_shards(spec: str) -> bool:
    """Whether ``--train-data`` names tar shards: what ``--dataset-type auto`` reads as a
    webdataset. Every ``::``-separated part must end in a tar suffix, before or after brace
    expansion; a URL's query (``?token=...``) does not count, and a ``pipe:`` command needs
    one word of it to end so (``pipe:aws s3 cp s3://b/{0..9}.tar -``)."""
    parts = [p for p in str(spec).split("::") if p]
    return bool(parts) and all(any(_names_a_tar(e) for e in _expand_one(p, 1))
                               for p in parts)


def _names_a_tar(location: str) -> bool:
    if is_pipe(location):
        return any(w.endswith(TAR_SUFFIXES) for w in _WORD.findall(location))
    if is_remote(location):
        return urlsplit(location).path.endswith(TAR_SUFFIXES) or \
            location.endswith(TAR_SUFFIXES)
    return location.endswith(TAR_SUFFIXES)


def _expand_one(pattern: str, limit: int | None = None) -> list[str]:
    out = []
    for name in braceexpand(pattern):
        out.append(name)
        if limit is not None and len(out) >= limit:
            break
    return out


def expand_shards(spec: str) -> list[str]:
    """The shard locations of ``--train-data``: ``::``-separated patterns, each
    brace-expanded (``shards/{00000..00999}.tar``, ``https://host/{00000..00999}.tar``,
    ``pipe:cat shards/{00000..00999}.tar``: the braces of a ``pipe:`` command expand over
    the whole command, as in open_clip), in order.

    Every local file must exist and hold data; every URL is asked for its size first (one
    HEAD request each for HTTP), so a shard that is missing (404), refused (401, 403) or
    empty stops the run here, before any training, with the URL and its pattern. A
    ``pipe:`` command cannot be checked without running it: a failing one is found when
    its shard is read."""
    patterns = [p for p in str(spec).split("::") if p.strip()]
    if not patterns:
        raise UserError("--train-data is empty; give shard files such as "
                        "'shards/{00000..00099}.tar'")
    shards: list[str] = []
    for pattern in patterns:
        names = _expand_one(pattern)
        local = [n for n in names if not is_remote(n)]
        paths = [Path(name).expanduser() for name in local]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            what = "matches no file" if len(missing) == len(paths) else \
                f"names {len(paths)} shards, {len(missing)} of which do not exist"
            raise MissingDataError(
                f"--train-data {pattern!r} {what}: the first missing is {missing[0]} "
                "(braces such as {00000..00099} are expanded, '::' separates patterns; "
                "relative paths are read from the working directory)")
        _check_urls(pattern, [n for n in names if is_remote(n) and not is_pipe(n)])
        # A local name as before: its path, ~ expanded (messages name it so).
        shards.extend(n if is_remote(n) else str(Path(n).expanduser()) for n in names)
    if any(is_remote(s) for s in shards):
        # Read here, in the main process, so that a bad ITRA_BENCH_NET_* value is one
        # message before training rather than an error in every DataLoader worker.
        Retry.from_env()
    seen: dict[str, str] = {}
    for shard in shards:
        # Two names of one file would give two readers the same samples in an epoch. A URL
        # is compared as written: two URLs of one file cannot be told apart from here.
        real = shard if is_remote(shard) else str(Path(shard).resolve())
        if real in seen:
            raise UserError(f"--train-data names shard {shard} twice (also as {seen[real]}); "
                            "each shard may appear once")
        seen[real] = shard
        if not is_remote(shard):
            check_shard(Path(shard))
    return shards


def _check_urls(pattern: str, urls: list[str]) -> None:
    """Stat every URL of ``pattern`` (in parallel): one error, naming the URL and the
    pattern, for the first that is missing, refused, unreachable or empty."""
    if not urls:
        return
    try:
        stats = stat_locations(urls, what="shard")
    except TransportError as exc:
        # The transport's message names the URL; the pattern says where it came from.
        raise type(exc)(f"--train-data {pattern!r}: {exc}") from None
    for stat in stats:
        if stat.size == 0:
            raise UserError(f"shard {stat.location} is empty (0 bytes); re-create it or leave "
                            f"it out of --train-data (pattern {pattern!r})")


def check_shard(path: Path) -> None:
    """Refuse a shard that holds nothing: 0 bytes, or only tar's end-of-archive blocks."""
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"shard {path} is empty (0 bytes); re-create it or leave it out of "
                        "--train-data")
    with path.open("rb") as f:
        head = f.read(_BLOCK)
    if head[:2] != b"\x1f\x8b" and not head.strip(b"\0"):
        raise UserError(f"shard {path} holds no samples (only tar's end-of-archive blocks); "
                        "re-create it or leave it out of --train-data")


class ShardError(Exception):
    """A shard that cannot be read on from here; the message names it and the member."""


@dataclass
class _Raw:
    """A sample as read from its shard: members undecoded."""

    sample_id: int
    key: str
    shard: str
    members: dict[str, bytes]
    passes: int  # how many times the worker read its shards before this one (0: first)


def read_shard(location: str | Path, shard_no: int
               ) -> Iterator[tuple[int, str, dict[str, bytes]]]:
    """The samples of one shard (a local path, a URL or a ``pipe:`` command): ``(id, key,
    {suffix: bytes})``, grouped as webdataset groups tar members. Raises
    :class:`ShardError` naming the shard and member at a damaged header, a member cut short,
    a key repeated within a sample, or a shard without samples, and the transport's
    ``TransportError`` for a remote shard that cannot be read after every retry.

    The shard is read from start to end, never seeked: a remote stream cannot seek."""
    path = str(location)
    position = 0
    key: str | None = None
    members: dict[str, bytes] = {}
    # A local file is opened plainly (buffered by the OS and io); a remote one through the
    # transport, which retries and resumes, with a read-ahead buffer in front.
    f: Any = io.BufferedReader(RemoteStream(path, what="shard"), _REMOTE_BUFFER) \
        if is_remote(path) else open(path, "rb")  # noqa: SIM115 - closed below
    with f:
        # Peeked, not read: the first bytes say whether the shard is gzip-compressed, and
        # neither reader can seek back to them (both files are io.BufferedReader).
        reader = _compressed_members(path, f) if f.peek(2)[:2] == b"\x1f\x8b" \
            else _plain_members(path, f)
        for name, data in reader:
            prefix, suffix = base_plus_ext(name)
            if prefix is None or _is_meta(name):
                continue
            suffix = suffix.lower()
            if prefix != key:
                if key is not None:
                    yield (shard_no << POSITION_BITS) | position, key, members
                    position += 1
                key, members = prefix, {}
            if suffix in members:
                raise ShardError(f"shard {path}, sample {prefix!r}: key {suffix!r} occurs "
                                 "twice in one sample; give every member of a sample its "
                                 "own extension")
            members[suffix] = data
    if key is None:
        raise ShardError(f"shard {path} holds no samples; re-create it or leave it out of "
                         "--train-data")
    yield (shard_no << POSITION_BITS) | position, key, members


def _octal(field: bytes) -> int:
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _plain_members(path: str, f: Any) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of the regular files of an uncompressed tar, read header by header.

    tarfile spends about 70 us on a member; this reads the ustar, pax and GNU long-name
    headers that tar writers (Python's tarfile, GNU tar) emit in a few, and is stricter:
    tarfile stops quietly at a damaged header or a file cut between two members, which would
    lose the rest of the shard unnoticed.
    """
    offset = 0
    last = "its first member"
    long_name: str | None = None
    while True:
        header = f.read(_BLOCK)
        if not header:
            raise ShardError(f"shard {path} ends after {last} without tar's end-of-archive "
                             "blocks: it is probably truncated; re-create or re-download it")
        if len(header) < _BLOCK:
            raise ShardError(f"shard {path} is cut short inside the header after {last}; "
                             "re-create or re-download it")
        if not header.strip(b"\0"):
            return  # end-of-archive
        try:
            stored = _octal(header[148:156])
            size_field = header[124:136]
            size = int.from_bytes(size_field[1:], "big") if size_field[0] & 0x80 else \
                _octal(size_field)
        except ValueError:
            stored, size = -1, 0
        if stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise ShardError(f"shard {path} is damaged: no valid tar header at byte {offset} "
                             f"(after {last}); re-create or re-download the shard")
        name = long_name
        long_name = None
        if name is None:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            prefix = header[345:500].split(b"\0", 1)[0]
            if header[257:262] == b"ustar" and prefix:
                name = prefix.decode("utf-8", "surrogateescape") + "/" + name
        data = f.read(size)
        if len(data) < size:
            raise ShardError(f"shard {path}: member {name!r} is damaged or cut short "
                             f"({len(data)} of {size} bytes); re-create or re-download the "
                             "shard")
        pad = -size % _BLOCK
        if pad:
            # Read, not seeked past: a remote stream only reads. Padding cut short shows at
            # the next header (the shard then ends without end-of-archive blocks).
            f.read(pad)
        offset += _BLOCK + size + pad
        kind = header[156:157]
        if kind == b"L":  # GNU long name: the next member's name
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind == b"x":  # pax extended header: only the path matters here
            long_name = _pax_path(data)
        elif kind in (b"0", b"\0", b"7"):
            last = f"member {name!r}"
            yield name, data


def _pax_path(data: bytes) -> str | None:
    for record in data.split(b"\n"):
        _, _, field = record.partition(b" ")
        keyword, sep, value = field.partition(b"=")
        if sep and keyword == b"path":
            return value.decode("utf-8", "surrogateescape")
    return None


def _compressed_members(path: str, f: Any) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of the regular files of a gzip-compressed tar (tarfile's stream)."""
    last = "its first member"
    try:
        with tarfile.open(fileobj=f, mode="r|gz") as tar:
            for info in tar:
                last = f"member {info.name!r}"
                if info.isreg():
                    extracted = tar.extractfile(info)
                    yield info.name, extracted.read() if extracted else b""
                tar.members = []  # a stream has no use for them; they would pile up
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ShardError(f"shard {path}: {last} is damaged or cut short ({exc}); re-create "
                         "or re-download the shard") from None


def _is_meta(name: str) -> bool:
    # The members webdataset skips: __index__-style metadata, and __meta__/... folders.
    base = name.split("/", 1)[0]
    return base.startswith("__") and (base.endswith("__") or "/" in name)


def _rng(*parts: object) -> random.Random:
    # A string seed is hashed with SHA-512: the same on every machine and Python run.
    return random.Random(":".join(str(p) for p in parts))


class WebDatasetImageText(IterableDataset):
    """Batches of (image, caption) from WebDataset shards, for one rank of a run.

    Batching happens here, in each DataLoader worker, so a worker can report samples it
    skipped (``--skip-corrupt``) or read a second time on the batch it delivers, and an error
    reaches the trainer as a :class:`DecodeFailure` instead of a worker's traceback.
    Sample ids (``Batch.indices``) are ``shard number << 32 | position in the shard``.
    """

    def __init__(self, shards: list[str] | list[Path], batch_size: int, batches: int,
                 rank: int, world_size: int, seed: int, resampled: bool = False,
                 skip_corrupt: bool = False, num_samples: int = 0,
                 transform: Callable[[Image.Image], torch.Tensor] | None = None,
                 teacher_transform: Callable[[Image.Image], torch.Tensor] | None = None,
                 shuffle_buffer: int = SHUFFLE_BUFFER) -> None:
        super().__init__()
        self.shards = [str(s) for s in shards]
        self.batch_size, self.batches = batch_size, batches
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.resampled, self.skip_corrupt = resampled, skip_corrupt
        self.num_samples = num_samples
        self.transform, self.teacher_transform = transform, teacher_transform
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 0

    def __len__(self) -> int:
        """Samples per epoch (``--train-num-samples``)."""
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Read epoch ``epoch``'s shards and order next (workers copy this when started)."""
        self.epoch = epoch

    def worker_shards(self, worker: int, workers: int) -> list[int]:
        """Shard numbers that ``worker`` of ``workers`` on this rank reads this epoch (without
        ``--dataset-resampled``): disjoint across ranks and workers."""
        order = list(range(len(self.shards)))
        _rng("shards", self.seed, self.epoch).shuffle(order)
        return order[self.rank::self.world_size][worker::workers]

    def _shard_stream(self, worker: int, workers: int) -> Iterator[tuple[int, int]]:
        """(shard number, how many passes over the worker's shards came before), endlessly
        (resampled shards are all pass 0)."""
        if self.resampled:
            rng = _rng("resampled", self.seed, self.epoch, self.rank, worker)
            while True:
                yield rng.randrange(len(self.shards)), 0
        mine = self.worker_shards(worker, workers)
        passes = 0
        while True:
            order = list(mine)
            if passes:
                _rng("again", self.seed, self.epoch, self.rank, worker, passes).shuffle(order)
            for shard_no in order:
                yield shard_no, passes
            passes += 1

    def _raw_samples(self, worker: int, workers: int, skipped: list[str]
                     ) -> Iterator[_Raw | DecodeFailure]:
        empty_run = 0  # consecutive shards without a readable sample
        # A whole pass over the worker's shards (or, resampled, more draws than there are
        # shards) without one readable sample would otherwise loop for ever.
        limit = len(self.shards) + 100 if self.resampled else \
            len(self.worker_shards(worker, workers))
        for shard_no, passes in self._shard_stream(worker, workers):
            path = self.shards[shard_no]
            found = False
            try:
                for sample_id, key, members in read_shard(path, shard_no):
                    found = True
                    yield _Raw(sample_id, key, path, members, passes)
            except TransportError as exc:
                # The network (or a pipe's command) failed after every retry: not a corrupt
                # sample, so --skip-corrupt does not skip it; training on without the shard
                # would silently change what an epoch reads.
                yield DecodeFailure(str(exc))
                return
            except ShardError as exc:
                if not self.skip_corrupt:
                    yield DecodeFailure(f"{exc} (or pass --skip-corrupt to skip the rest of "
                                        "the shard)")
                    return
                skipped.append(f"{exc} (rest of the shard skipped)")
            empty_run = 0 if found else empty_run + 1
            if empty_run >= limit:
                yield DecodeFailure(f"no readable sample in {empty_run} shards in a row "
                                    f"(the last {path}); with --skip-corrupt every sample "
                                    "was skipped: check the shards")
                return

    def _shuffled(self, samples: Iterator[_Raw | DecodeFailure], worker: int
                  ) -> Iterator[_Raw | DecodeFailure]:
        rng = _rng("samples", self.seed, self.epoch, self.rank, worker)
        buffer: list[_Raw] = []
        for sample in samples:
            if isinstance(sample, DecodeFailure):
                yield sample
                return
            if buffer and sample.passes != buffer[0].passes:
                # A second pass starts only once the first is used up: the buffer never
                # holds a sample twice, so an epoch that fits in one pass has no repeats.
                rng.shuffle(buffer)
                yield from buffer
                buffer = []
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def decode(self, raw: _Raw) -> tuple[Any, Any, str, int]:
        """(image for the model, image for the teacher or None, caption, sample id); raises
        :class:`ShardError` naming the shard and sample key when a member is missing or
        cannot be decoded."""
        where = f"shard {raw.shard}, sample {raw.key!r}"
        image_key = next((k for k in IMAGE_KEYS if k in raw.members), None)
        has = ", ".join(raw.members) or "no members"
        if image_key is None:
            raise ShardError(f"{where}: no image (none of the keys {', '.join(IMAGE_KEYS)}; "
                             f"it has {has})")
        if CAPTION_KEY not in raw.members:
            raise ShardError(f"{where}: no caption (key {CAPTION_KEY!r}; it has {has})")
        try:
            caption = raw.members[CAPTION_KEY].decode("utf-8-sig").strip()
        except UnicodeDecodeError as exc:
            raise ShardError(f"{where}: key {CAPTION_KEY!r} is not UTF-8 ({exc})") from None
        try:
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; refused as above it.
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(raw.members[image_key])) as img:
                    img = to_rgb(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ShardError(f"{where}: image {image_key!r} is refused as a possible "
                             f"decompression bomb ({exc})") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ShardError(f"{where}: cannot decode image {image_key!r}: {exc}") from None
        teacher = self.teacher_transform(img) if self.teacher_transform else None
        return (self.transform(img) if self.transform else img), teacher, caption, \
            raw.sample_id

    def __iter__(self) -> Iterator[Batch | DecodeFailure]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader hands out batch p to worker p % workers: each worker makes exactly
        # its share of the rank's batches, so the rank's epoch is exactly `batches` long.
        quota = (self.batches - worker + workers - 1) // workers
        if quota <= 0:
            return
        skipped: list[str] = []
        items: list[tuple[Any, Any, str, int]] = []
        repeats = 0
        made = 0
        for raw in self._shuffled(self._raw_samples(worker, workers, skipped), worker):
            if isinstance(raw, DecodeFailure):
                yield raw
                return
            try:
                items.append(self.decode(raw))
            except ShardError as exc:
                if not self.skip_corrupt:
                    yield DecodeFailure(f"{exc}. Replace the sample, or pass --skip-corrupt "
                                        "to skip it")
                    return
                skipped.append(str(exc))
                continue
            repeats += raw.passes > 0
            if len(items) == self.batch_size:
                batch = collate(items)  # type: ignore[arg-type]
                yield batch._replace(skipped=tuple(skipped), repeats=repeats)
                items, skipped, repeats = [], [], 0
                made += 1
                if made == quota:
                    return
