"""Readers of datasets in torchvision's on-disk formats, never downloading anything.

- :class:`CifarSplit`: the python pickles that ``torchvision.datasets.CIFAR10`` / ``CIFAR100``
  download and read (``cifar-10-batches-py/``, ``cifar-100-python/``).
- :class:`STL10Split`: the binary files of ``torchvision.datasets.STL10`` (``stl10_binary/``).
- :class:`ClassListFolder`: a ``torchvision.datasets.ImageFolder`` tree whose class folders
  stand for a fixed, ordered class list (CLIP's class names), as the CLOOB / ProtoCLIP / ITRA
  evaluation code reads them.

Images come out exactly as torchvision's datasets give them (tests/test_classic_suites.py
compares both on the same files). No checksum is verified: users' files are whatever they
downloaded, and a damaged file fails with an error naming it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench.datasets.image_source import ImageFiles, ImageSource
from itra_bench.datasets.imagefolder import IMAGE_EXTENSIONS
from itra_bench.errors import MissingDataError, UserError
from itra_bench.fingerprint import files_identity

# numpy and PIL load when a split is read: the classic task plugin imports this module for
# every command, `itra-bench --help` and `list` included.
if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

SPLITS = ("train", "test")

#: torchvision's folder and file names, per dataset (``base_folder``, ``train_list``, ...).
CIFAR_FILES: dict[str, dict[str, Any]] = {
    "cifar10": {
        "title": "CIFAR-10",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels_key": "labels",
        "names_key": "label_names",
        "torchvision": "CIFAR10",
        "archive": "cifar-10-python.tar.gz",
    },
    "cifar100": {
        "title": "CIFAR-100",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels_key": "fine_labels",
        "names_key": "fine_label_names",
        "torchvision": "CIFAR100",
        "archive": "cifar-100-python.tar.gz",
    },
}
STL10_FOLDER = "stl10_binary"
STL10_SIZE = 96


def cifar_layout(variant: str) -> str:
    """Human description of torchvision's CIFAR files under ``--data-root``."""
    spec = CIFAR_FILES[variant]
    files = ", ".join([*spec["train"], *spec["test"], spec["meta"]])
    return (f"{spec['folder']}/{{{files}}} (torchvision's {spec['title']} python pickles: "
            f"torchvision.datasets.{spec['torchvision']}(DATA_ROOT, download=True) leaves "
            f"them, or unpack {spec['archive']} in DATA_ROOT)")


def cifar_required_paths(data_root: Path, variant: str, splits: Sequence[str]) -> list[Path]:
    """The CIFAR files that reading ``splits`` needs."""
    spec = CIFAR_FILES[variant]
    base = Path(data_root) / spec["folder"]
    return [base / f for s in splits for f in spec[s]] + [base / spec["meta"]]


def stl10_layout() -> str:
    """Human description of torchvision's STL-10 files under ``--data-root``."""
    return (f"{STL10_FOLDER}/{{train_X.bin, train_y.bin, test_X.bin, test_y.bin, "
            "class_names.txt} (torchvision's STL-10 binaries: "
            "torchvision.datasets.STL10(DATA_ROOT, download=True) leaves them, or unpack "
            "stl10_binary.tar.gz in DATA_ROOT)")


def stl10_required_paths(data_root: Path, splits: Sequence[str]) -> list[Path]:
    """The STL-10 files that reading ``splits`` needs."""
    base = Path(data_root) / STL10_FOLDER
    return [base / f"{s}_{xy}.bin" for s in splits for xy in ("X", "y")] + \
        [base / "class_names.txt"]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def _missing(path: Path, title: str, layout: str, torchvision_name: str) -> MissingDataError:
    return MissingDataError(
        f"{title} file not found: {path}. Expected layout under --data-root: {layout}. "
        f"Download with torchvision.datasets.{torchvision_name}(root, download=True) on a "
        "machine with network and copy the folder here (nothing is downloaded at run time)."
    )


def _files_digest(paths: Sequence[Path]) -> str:
    """Identity of each file's absolute path, size and modification time."""
    return files_identity(p.resolve() for p in paths)


def _empty_array(subtype: type, shape: Any, dtype: Any) -> Any:
    """numpy's ``_reconstruct``, for the empty placeholder that an array's pickled state
    fills in (its data then comes from the file); any other shape is refused, as it would
    allocate what the file never holds."""
    import numpy as np

    if not (isinstance(subtype, type) and issubclass(subtype, np.ndarray)
            and isinstance(shape, tuple) and 0 in shape
            and all(isinstance(n, int) and 0 <= n for n in shape)):
        raise pickle.UnpicklingError(f"an array placeholder of shape {shape!r}")
    return np.ndarray.__new__(subtype, shape, dtype)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, refusing every other class.

    CIFAR's pickles hold only dicts, lists, strings and uint8 arrays, so nothing else is
    needed, and a tampered file cannot run code.
    """

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            return _empty_array
        import numpy as np

        if module.startswith("numpy.core.") and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            # Files pickled under numpy 1 name numpy.core, an alias of numpy._core since 2.0.
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


#: Opcodes that store into the memo at the index they name.
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _check_claims(data: bytes) -> None:
    """Refuse a pickle whose opcodes claim more than ``data`` holds (a length, a memo slot),
    which the unpickler would allocate before finding the file short: ValueError."""
    import pickletools

    for count, (op, arg, _) in enumerate(pickletools.genops(io.BytesIO(data))):
        # A pickler numbers its memo entries in order, so an entry never exceeds the count
        # of opcodes before it (genops has already checked every counted length).
        if op.name in _MEMO_PUTS and not (isinstance(arg, int) and 0 <= arg <= count):
            raise ValueError(f"memo index {arg} at opcode {count}")


def load_cifar_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with ``str`` keys (files hold ``str`` or ``bytes`` keys)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror or exc})") from exc
    try:
        _check_claims(data)
        # latin1 as torchvision: the original files were pickled by Python 2. From memory,
        # so that a read never asks for more than the file holds.
        obj = _ArraysOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            OverflowError, KeyError, IndexError, LookupError, RecursionError) as exc:
        raise UserError(f"{path} is not a readable CIFAR pickle ({exc}); download it again"
                        ) from exc
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not the dict a CIFAR pickle has")
    if not all(isinstance(k, str | bytes) for k in obj):
        raise UserError(f"{path} holds a dict with keys other than strings, not a CIFAR "
                        "pickle; download it again")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(entry: dict[str, Any], key: str, path: Path) -> Any:
    if key not in entry:
        raise UserError(f"{path} has no {key!r} entry (found {sorted(entry)}); it is not a "
                        "CIFAR file of this variant")
    return entry[key]


def _length(value: Any) -> int | None:
    """The length of a list, tuple or one-dimensional array; None for anything else."""
    import numpy as np

    if isinstance(value, list | tuple) or isinstance(value, np.ndarray) and value.ndim == 1:
        return len(value)
    return None


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


class CifarSplit(ImageSource):
    """One split of CIFAR-10 or CIFAR-100, from torchvision's pickles under ``root``.

    ``targets`` are the dataset's label indices (fine labels for CIFAR-100) and ``classes``
    the names in ``batches.meta`` / ``meta``, as ``torchvision.datasets.CIFAR10/100`` has them.
    """

    def __init__(self, root: str | Path, variant: str, split: str) -> None:
        if variant not in CIFAR_FILES:
            raise ValueError(f"variant must be one of {sorted(CIFAR_FILES)}, not {variant!r}")
        _check_split(split)
        spec = CIFAR_FILES[variant]
        self.root = Path(root).absolute()
        self.variant, self.split = variant, split
        base = self.root / spec["folder"]
        files = [base / name for name in spec[split]]
        meta = base / spec["meta"]
        for p in [*files, meta]:
            if not p.is_file():
                raise _missing(p, spec["title"], cifar_layout(variant), spec["torchvision"])
        import numpy as np

        names = _field(load_cifar_pickle(meta), spec["names_key"], meta)
        # Each name takes a byte of the file at least: a longer list is an array that claims
        # elements it does not hold.
        if _length(names) is None or len(names) > meta.stat().st_size:
            raise UserError(f"{meta}: {spec['names_key']!r} must be a list of class names; "
                            "download the file again")
        self.classes: list[str] = [_text(n) for n in names]

        chunks: list[np.ndarray] = []
        self.targets: list[int] = []
        self._rows: list[tuple[Path, int]] = []
        for p in files:
            entry = load_cifar_pickle(p)
            data, labels = _field(entry, "data", p), _field(entry, spec["labels_key"], p)
            # The shapes first: iterating labels that only claim their length could take
            # hours.
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
                    or data.shape[1] != 3 * 32 * 32 or len(data) != _length(labels):
                found = (f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray)
                         else type(data).__name__)
                count = _length(labels)
                raise UserError(f"{p}: expected 'data' uint8 [N, 3072] and N labels, found "
                                f"{found} and {'no list of' if count is None else count} "
                                "labels; download it again")
            try:
                labels = [int(v) for v in labels]
            except (TypeError, ValueError, OverflowError) as exc:
                raise UserError(f"{p}: the labels must be integers ({exc}); download it "
                                "again") from exc
            bad = [v for v in labels if not 0 <= v < len(self.classes)]
            if bad:
                raise UserError(f"{p}: label {bad[0]} is outside the {len(self.classes)} "
                                f"classes named in {meta}")
            chunks.append(data)
            self.targets.extend(labels)
            self._rows.extend((p, i) for i in range(len(labels)))
        # Rows are channel-major 32x32 planes: [N, 3, 32, 32] -> [N, 32, 32, 3] as torchvision.
        self._images = np.concatenate(chunks).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.identity = f"torchvision-{variant}:{split}:{_files_digest([*files, meta])}"

    def __len__(self) -> int:
        return len(self.targets)

    def open_image(self, index: int) -> Image.Image:
        import numpy as np
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(self._images[index]))

    def describe(self, index: int) -> str:
        path, row = self._rows[index]
        return f"{path} row {row}"


class STL10Split(ImageSource):
    """One labelled split of STL-10 from torchvision's binaries under ``root``.

    The image file is memory-mapped, so only the images encoded are read. Labels on disk
    are 1-based; ``targets`` are 0-based, as torchvision's.
    """

    _IMAGE_BYTES = 3 * STL10_SIZE * STL10_SIZE

    def __init__(self, root: str | Path, split: str) -> None:
        _check_split(split)
        self.root = Path(root).absolute()
        self.split = split
        base = self.root / STL10_FOLDER
        self.images_path = base / f"{split}_X.bin"
        labels_path = base / f"{split}_y.bin"
        names_path = base / "class_names.txt"
        for p in (self.images_path, labels_path, names_path):
            if not p.is_file():
                raise _missing(p, "STL-10", stl10_layout(), "STL10")
        self.classes: list[str] = names_path.read_text().split()
        import numpy as np

        labels = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64) - 1
        size = self.images_path.stat().st_size
        if size % self._IMAGE_BYTES or size // self._IMAGE_BYTES != len(labels):
            raise UserError(
                f"{self.images_path} holds {size} bytes, not {len(labels)} images of "
                f"3x{STL10_SIZE}x{STL10_SIZE} bytes as {labels_path} has labels; one of them "
                "is truncated or from another split")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise UserError(f"{labels_path}: labels must lie in 1..{len(self.classes)} "
                            f"(the classes of {names_path})")
        self.targets: list[int] = labels.tolist()
        self._images: np.memmap | None = None
        self.identity = (f"torchvision-stl10:{split}:"
                         f"{_files_digest([self.images_path, labels_path, names_path])}")

    def __getstate__(self) -> dict[str, Any]:
        # A memmap would be pickled as a full in-memory copy; workers map the file again.
        return {**self.__dict__, "_images": None}

    def _mapped(self) -> np.memmap:
        if self._images is None:
            import numpy as np

            self._images = np.memmap(self.images_path, dtype=np.uint8, mode="r",
                                     shape=(len(self.targets), 3, STL10_SIZE, STL10_SIZE))
        return self._images

    def __len__(self) -> int:
        return len(self.targets)

    def open_image(self, index: int) -> Image.Image:
        import numpy as np
        from PIL import Image

        # Each channel plane is stored column-major: [3, x, y] -> [y, x, 3].
        return Image.fromarray(np.ascontiguousarray(self._mapped()[index].transpose(2, 1, 0)))

    def describe(self, index: int) -> str:
        return f"{self.images_path} image {index}"


def _normalised(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def sorted_class_folders(names: Sequence[str]) -> list[str]:
    """Class folder names in label order: numerically when all are integers, else as
    ``torchvision.datasets.ImageFolder`` sorts them.

    Zero-padded numbers sort the same either way; unpadded ones (``2`` before ``10``) only
    numerically.
    """
    if names and all(n.isdigit() for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


class ClassListFolder(ImageFiles):
    """A class-folder tree ``split_dir/<class folder>/<image>`` read against a fixed class list.

    Folders map to classes by name when every folder is named after a distinct class (case,
    spaces and punctuation ignored: ``ApplyEyeMakeup`` is "Apply Eye Makeup"); otherwise the
    i-th folder in sorted order (:func:`sorted_class_folders`) is class i, which is how
    ``ImageFolder`` labels it and so how the CLOOB / ProtoCLIP / ITRA code evaluates it.

    ``absent`` are indices of classes that a published copy of the dataset has no images of
    (their folders are empty or removed). Such a class is left out of ``classes`` when it has
    no images here, and the remaining classes keep their relative order.
    """

    def __init__(self, split_dir: str | Path, classnames: Sequence[str],
                 absent: Sequence[int] = (), title: str = "", layout: str = "") -> None:
        self.split_dir = Path(split_dir).absolute()
        where = f" ({title})" if title else ""
        hint = f" Expected layout: {layout}" if layout else ""
        if not self.split_dir.is_dir():
            raise MissingDataError(f"image folder not found{where}: {self.split_dir}.{hint}")
        folders = sorted_class_folders([p.name for p in self.split_dir.iterdir() if p.is_dir()])
        if not folders:
            raise MissingDataError(f"no class folders in {self.split_dir}{where}.{hint}")
        files = {f: self._images_in(self.split_dir / f) for f in folders}
        label_of = self._labels(folders, list(classnames), set(absent), where, hint)
        # Drop the known-absent classes that have no images, renumbering the rest.
        populated = {label_of[f] for f in folders if files[f]}
        kept = [i for i in range(len(classnames)) if i not in absent or i in populated]
        new_index = {old: new for new, old in enumerate(kept)}
        self.classes: list[str] = [classnames[i] for i in kept]
        self.folders: dict[str, int] = {f: new_index[label_of[f]] for f in folders
                                        if label_of[f] in new_index}
        self.paths: list[Path] = []
        self.targets: list[int] = []
        for f in folders:
            for p in files[f]:
                self.paths.append(p)
                self.targets.append(self.folders[f])
        if not self.paths:
            raise MissingDataError(f"no images under {self.split_dir}{where}.{hint}")
        digest = hashlib.sha256()
        for p, t in zip(self.paths, self.targets, strict=True):
            st = p.stat()
            digest.update(f"{p}\0{t}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        self.identity = f"classfolder:{digest.hexdigest()[:20]}"

    @staticmethod
    def _images_in(folder: Path) -> list[Path]:
        return [p for p in sorted(folder.rglob("*"))
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]

    def _labels(self, folders: list[str], classnames: list[str], absent: set[int], where: str,
                hint: str) -> dict[str, int]:
        by_name = {_normalised(c): i for i, c in enumerate(classnames)}
        if len(by_name) == len(classnames) and all(_normalised(f) in by_name for f in folders) \
                and len({_normalised(f) for f in folders}) == len(folders):
            return {f: by_name[_normalised(f)] for f in folders}
        if len(folders) == len(classnames):
            return {f: i for i, f in enumerate(folders)}
        present = [i for i in range(len(classnames)) if i not in absent]
        if absent and len(folders) == len(present):
            return dict(zip(folders, present, strict=True))
        expected = f"{len(classnames)}" + (f" (or {len(present)}, without the {len(absent)} "
                                           "classes the published copy lacks)" if absent else "")
        raise UserError(
            f"{self.split_dir}{where} has {len(folders)} class folders ({folders[0]!r} .. "
            f"{folders[-1]!r}) but the dataset has {expected} classes. The i-th class folder "
            "in sorted order is class i (or, when every folder is named after a class, its "
            f"namesake); add the missing class folders, empty if need be.{hint}")
