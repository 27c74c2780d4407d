"""clip-benchmark's WebDataset folders, read as indexed image sources.

Layout (what ``clip_benchmark_export_wds`` writes and its ``build_wds_dataset`` reads)::

    ROOT/classnames.txt                          one class name a line (label i = line i+1)
    ROOT/zeroshot_classification_templates.txt   one prompt a line, class name as {c}
    ROOT/dataset_type.txt                        optional: "retrieval" for caption data
    ROOT/<split>/nshards.txt                     the number of shards, N
    ROOT/<split>/0.tar ... ROOT/<split>/<N-1>.tar

ROOT is a local folder or a remote one: a URL (``https://``, ``s3://``, ...) or a ``pipe:``
command with ``{file}`` where each file's path goes (:mod:`remote_split` says how remote
shards are checked, identified and fetched).

Each sample is the run of consecutive tar members sharing a key (``s0000042.webp``,
``s0000042.cls``), grouped as the ``webdataset`` library groups them. Its image is the first
of the members ``webp``, ``png``, ``jpg``, ``jpeg`` present; its label is ``cls`` (an
integer) or, for retrieval, ``txt`` (its captions, one a line).
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench import ImageSource, MissingDataError, UserError, files_identity, is_remote
from itra_bench.tasks.wds.folder_access import FolderAccess, location, read_text
from itra_bench.tasks.wds.layout import (
    CAPTION_KEY,
    CLASSNAMES,
    DATASET_TYPE,
    IMAGE_KEYS,
    LABEL_KEY,
    LAYOUT,
    NSHARDS,
    TEMPLATES,
    shard_count,
)
from itra_bench.tasks.wds.remote_split import RemoteShards, remote_shard_locations

# numpy and PIL load with the shards: the wds task plugin imports this module for every
# command, `itra-bench --help` and `list` included.
if TYPE_CHECKING:
    from PIL import Image

__all__ = ["CAPTION_KEY", "CLASSNAMES", "DATASET_TYPE", "IMAGE_KEYS", "LABEL_KEY", "LAYOUT",
           "NSHARDS", "TEMPLATES", "WebDatasetSplit", "dataset_type", "read_lines",
           "shard_locations", "shard_paths"]

_BLOCK = 512
_META = re.compile(r"__[^/]*__($|/)")


def dataset_type(root: str | Path, access: FolderAccess | None = None) -> str | None:
    """What the folder's ``dataset_type.txt`` says ("classification" when it is empty);
    None when the folder has none."""
    text = read_text(location(root, DATASET_TYPE), "dataset type", access, optional=True)
    return None if text is None else text.strip().lower() or "classification"


def read_lines(where: str | Path, what: str, access: FolderAccess | None = None) -> list[str]:
    """The stripped lines of the file at ``where`` (a path or location; a class name or
    template each), without trailing blank lines; a blank line before the last entry is
    refused, since it would shift every later entry (a label is a line number)."""
    try:
        text = read_text(str(where), what, access)
    except MissingDataError as exc:
        raise MissingDataError(f"{exc} Expected layout: {LAYOUT}") from None
    lines = [line.strip() for line in (text or "").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise UserError(f"{where} is empty; write one {what} a line.")
    blank = [i + 1 for i, line in enumerate(lines) if not line]
    if blank:
        raise UserError(f"{where}, line {blank[0]}: blank line; write one {what} a line, "
                        "with no blank lines between them.")
    return lines


def shard_locations(root: str | Path, split: str, access: FolderAccess | None = None
                    ) -> list[str]:
    """The shards of ``split`` that its ``nshards.txt`` announces: checked to exist for a
    local folder (:func:`shard_paths`), listed for a remote one (checked when read)."""
    if is_remote(str(root)):
        return remote_shard_locations(str(root), split, access or FolderAccess.default())
    return [str(p) for p in shard_paths(Path(root) / split)]


def shard_paths(split_dir: Path) -> list[Path]:
    """The shards ``0.tar .. <N-1>.tar`` that ``split_dir/nshards.txt`` announces, all of
    which must exist, and no other numbered shard beside them."""
    nshards_file = split_dir / NSHARDS
    if not split_dir.is_dir():
        raise MissingDataError(f"webdataset split not found: {split_dir} does not exist. "
                               f"Expected layout: {LAYOUT}")
    if not nshards_file.is_file():
        raise MissingDataError(f"{nshards_file} not found: a webdataset split names its shard "
                               f"count there. Expected layout: {LAYOUT}")
    count = shard_count(read_text(str(nshards_file), "shard count") or "", str(nshards_file))
    paths = [split_dir / f"{i}.tar" for i in range(count)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        present = sorted(p.name for p in split_dir.glob("*.tar"))
        raise MissingDataError(
            f"{nshards_file} announces {count} shards (0.tar .. {count - 1}.tar) but "
            f"{len(missing)} of them are missing from {split_dir}: {', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''} (tar files there: "
            f"{', '.join(present[:5]) or 'none'}{', ...' if len(present) > 5 else ''}). "
            "Download the missing shards, or correct nshards.txt.")
    extra = sorted((p.name for p in split_dir.glob("*.tar")
                    if p.stem.isdigit() and int(p.stem) >= count), key=lambda n: int(n[:-4]))
    if extra:
        raise UserError(f"{nshards_file} announces {count} shards but {split_dir} also holds "
                        f"{', '.join(extra[:5])}; correct nshards.txt (or remove the stray "
                        "shards) so the split is read whole.")
    return paths


@dataclass
class _Sample:
    key: str
    members: dict[str, tuple[int, int]]  # suffix -> (data offset, size)


def _nonzero(path: Path, start: int, length: int) -> bool:
    with path.open("rb") as f:
        f.seek(start)
        return bool(f.read(length).strip(b"\0"))


def _add_member(samples: list[_Sample], info: tarfile.TarInfo, shard: str) -> None:
    """Add one tar member to ``samples``, grouped and named as webdataset does."""
    name = info.name
    if not info.isreg():
        return
    # The members webdataset skips: metadata such as __index__ or __meta__/...
    if ("/" not in name and name.startswith("__") and name.endswith("__")) \
            or _META.match(name):
        return
    # webdataset imports torch: only when shards are read, never when tasks are listed.
    from webdataset.tariterators import base_plus_ext

    prefix, suffix = base_plus_ext(name)
    if prefix is None:
        return
    suffix = suffix.lower()
    if not samples or samples[-1].key != prefix:
        samples.append(_Sample(prefix, {}))
    if suffix in samples[-1].members:
        raise UserError(f"shard {shard}, sample {prefix!r}: key {suffix!r} occurs twice in one "
                        "sample; give every member of a sample its own extension.")
    samples[-1].members[suffix] = (info.offset_data, info.size)


def _index_shard(path: Path, shard: str) -> list[_Sample]:
    """The samples of the uncompressed tar shard ``path`` (``shard`` in messages: its path or
    URL), members located by byte offset."""
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"shard {shard} is empty (0 bytes); re-create or re-download it.")
    with path.open("rb") as f:
        if f.read(2) == b"\x1f\x8b":
            raise UserError(f"shard {shard} is gzip-compressed; only plain .tar shards can be "
                            "read by index (decompress it: gunzip -c x.tar.gz > x.tar).")
    samples: list[_Sample] = []
    try:
        tar = tarfile.open(path, mode="r:")
    except tarfile.TarError as exc:
        if not _nonzero(path, 0, size):
            raise UserError(f"shard {shard} holds no samples (only tar's end-of-archive "
                            "blocks); re-create or re-download it, or correct nshards.txt."
                            ) from None
        raise UserError(f"shard {shard} is not a tar file ({exc}); re-create or re-download "
                        "it.") from None
    last = "its first member"
    cut = False
    with tar:
        try:
            for info in tar:
                last = f"member {info.name!r}"
                _add_member(samples, info, shard)
        except tarfile.TarError:
            # "unexpected end of data": the member just read runs past the end of the file.
            # Its sample is kept; reading the cut member fails and names it.
            cut = True
        end = tar.offset
    # tarfile stops quietly at a damaged header, and at the end of a file cut between two
    # members: refuse rather than read part of a shard.
    if not cut and end >= size:
        raise UserError(f"shard {shard} ends after {last} without tar's end-of-archive blocks: "
                        "it is probably truncated; re-create or re-download it.")
    if not cut and _nonzero(path, end, _BLOCK):
        raise UserError(f"shard {shard} is damaged: no valid tar header at byte {end} "
                        f"(after {last}), so the samples after it cannot be located "
                        "(--skip-corrupt cannot skip them); re-create or re-download the "
                        "shard.")
    if not samples:
        raise UserError(f"shard {shard} holds no samples; re-create or re-download it, or "
                        "correct nshards.txt.")
    return samples


class WebDatasetSplit(ImageSource):
    """One split of a clip-benchmark webdataset folder, readable image by image.

    The shards are indexed once (tar headers only, plus the small ``cls``/``txt`` members);
    an image's bytes are read from its shard at its byte offset when the encoder asks for it,
    so DataLoader workers can read any sample in any order. Memory: about 100 bytes a sample
    (offset, size, shard number and the member name kept for messages), 100 MB for 1M
    images; shards must be plain (uncompressed) tar files.

    ``labels="cls"`` gives ``targets`` and ``classes`` (from ``classnames.txt``);
    ``labels="txt"`` gives ``captions`` and ``text_to_image`` (each line of ``txt`` one
    caption of the sample's image, as clip-benchmark splits them).
    """

    def __init__(self, root: str | Path, split: str, labels: str = LABEL_KEY,
                 access: FolderAccess | None = None) -> None:
        remote = is_remote(str(root))
        self.root: str | Path = str(root) if remote else Path(root).absolute()
        self.split = split
        access = access or FolderAccess.default()
        if labels == LABEL_KEY:
            self.classes = read_lines(location(self.root, CLASSNAMES), "class name", access)
        self._remote: RemoteShards | None = None
        if not remote:
            self.shards: list[Path | None] = list(shard_paths(Path(self.root) / split))
            self.shard_names = [str(p) for p in self.shards]
            self._use(self._index(self.shards, labels))  # type: ignore[arg-type]
            self.identity = "webdataset:" + files_identity(
                self.shards, salt=f"{self.root}\0{split}")  # type: ignore[arg-type]
            return
        self._remote = shards = RemoteShards(str(self.root), split, labels, access)
        self.shard_names = shards.locations
        self.shards = shards.local
        index = shards.recorded_index()
        if index is None:
            # Read now: the labels are needed whether or not the features are cached.
            index = self._index(shards.fetch(), labels)
            shards.save_record(index)
        self._use(index)
        self.identity = shards.identity  # type: ignore[assignment]

    def _index(self, paths: list[Path], labels: str) -> dict[str, Any]:
        """The split's samples: where each image lies (shard, byte offset, size), its member
        name, and its label or captions."""
        import torch

        shard_of: list[int] = []
        offsets: list[int] = []
        sizes: list[int] = []
        names: list[str] = []
        targets: list[int] = []
        captions: list[str] = []
        text_to_image: list[int] = []
        for shard_no, path in enumerate(paths):
            shard = self.shard_names[shard_no]
            with path.open("rb") as f:
                for sample in _index_shard(path, shard):
                    image_key = next((k for k in IMAGE_KEYS if k in sample.members), None)
                    if image_key is None:
                        raise UserError(
                            f"shard {shard}, sample {sample.key!r}: no image (none of the keys "
                            f"{', '.join(IMAGE_KEYS)}; it has {', '.join(sample.members)}). "
                            "Every sample needs one image member.")
                    offset, size = sample.members[image_key]
                    if labels == LABEL_KEY:
                        targets.append(self._label(shard, sample, f))
                    else:
                        for caption in self._captions(shard, sample, f):
                            captions.append(caption)
                            text_to_image.append(len(offsets))
                    shard_of.append(shard_no)
                    offsets.append(offset)
                    sizes.append(size)
                    names.append(f"{sample.key}.{image_key}")
        return {"shard_of": torch.tensor(shard_of, dtype=torch.int32),
                "offsets": torch.tensor(offsets, dtype=torch.int64),
                "sizes": torch.tensor(sizes, dtype=torch.int64),
                "names": names, "targets": targets, "captions": captions,
                "text_to_image": text_to_image}

    def _use(self, index: dict[str, Any]) -> None:
        self._shard_of = index["shard_of"].numpy()
        self._offsets = index["offsets"].numpy()
        self._sizes = index["sizes"].numpy()
        self.names: list[str] = list(index["names"])
        self.targets: list[int] = list(index["targets"])
        self.captions: list[str] = list(index["captions"])
        self.text_to_image: list[int] = list(index["text_to_image"])

    def prepare(self) -> None:
        """Fetch a remote split's shards, unless done already (a local split is ready)."""
        if self._remote is not None:
            self.shards = list(self._remote.fetch())

    def _member(self, shard: str, sample: _Sample, key: str, f: io.BufferedReader) -> bytes:
        if key not in sample.members:
            raise UserError(f"shard {shard}, sample {sample.key!r}: no {key!r} member (it has "
                            f"{', '.join(sample.members)}). Every sample of this split needs "
                            f"one; for clip-benchmark's layout see {LAYOUT}")
        offset, size = sample.members[key]
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise UserError(f"shard {shard}, sample {sample.key!r}: member {key!r} is cut "
                            "short (the shard is truncated); re-create or re-download it.")
        return data

    def _label(self, shard: str, sample: _Sample, f: io.BufferedReader) -> int:
        data = self._member(shard, sample, LABEL_KEY, f)
        try:
            label = int(data)  # as webdataset decodes .cls
        except ValueError:
            raise UserError(f"shard {shard}, sample {sample.key!r}: key {LABEL_KEY!r} holds "
                            f"{data[:40]!r}, not an integer class index.") from None
        if not 0 <= label < len(self.classes):
            raise UserError(f"shard {shard}, sample {sample.key!r}: key {LABEL_KEY!r} is "
                            f"{label}, outside the {len(self.classes)} classes of "
                            f"{location(self.root, CLASSNAMES)} (0..{len(self.classes) - 1}).")
        return label

    def _captions(self, shard: str, sample: _Sample, f: io.BufferedReader) -> list[str]:
        data = self._member(shard, sample, CAPTION_KEY, f)
        try:
            captions = data.decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise UserError(f"shard {shard}, sample {sample.key!r}: key {CAPTION_KEY!r} is not "
                            f"UTF-8 ({exc}).") from None
        if not captions:
            raise UserError(f"shard {shard}, sample {sample.key!r}: key {CAPTION_KEY!r} is "
                            "empty; write the image's captions there, one a line.")
        return captions

    def __len__(self) -> int:
        return len(self._offsets)

    def read_bytes(self, index: int) -> bytes:
        """The encoded image bytes of sample ``index`` (raises on a cut-short member)."""
        offset, size = int(self._offsets[index]), int(self._sizes[index])
        path = self.shards[self._shard_of[index]]
        if path is None:  # a remote split read without prepare(): fetch it now
            self.prepare()
            path = self.shards[self._shard_of[index]]
        with path.open("rb") as f:  # type: ignore[union-attr]
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise OSError(f"tar member cut short: {len(data)} of {size} bytes (truncated shard)")
        return data

    def open_image(self, index: int) -> Image.Image:
        from PIL import Image

        return Image.open(io.BytesIO(self.read_bytes(index)))

    def describe(self, index: int) -> str:
        return f"{self.shard_names[self._shard_of[index]]}:{self.names[index]}"
