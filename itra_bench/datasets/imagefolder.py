"""ImageFolder trees: ``root/<split>/<class>/<image>``, class names from folder names."""

from __future__ import annotations

import hashlib
from pathlib import Path

from itra_bench.datasets.image_source import ImageFiles
from itra_bench.errors import MissingDataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")

LAYOUT = "ROOT/<split>/<class name>/<image>.jpg (one folder per class, any of {})".format(
    " ".join(IMAGE_EXTENSIONS)
)


class ImageFolderSplit(ImageFiles):
    """One split of an ImageFolder tree, with integer targets in sorted class-folder order."""

    def __init__(self, root: str | Path, split: str, classes: list[str] | None = None) -> None:
        self.root = Path(root).absolute()
        self.split = split
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise MissingDataError(
                f"image folder split not found: {split_dir} does not exist. "
                f"Expected layout: {LAYOUT}"
            )
        found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        self.classes = list(classes) if classes is not None else found
        if not self.classes:
            raise MissingDataError(
                f"no class folders in {split_dir}. Expected layout: {LAYOUT}"
            )
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise MissingDataError(
                f"{split_dir} has class folders {unknown} outside the task's class list "
                f"{self.classes}; every split must use the same class folder names"
            )
        self.paths: list[Path] = []
        self.targets: list[int] = []
        # Identity: every file's absolute path, size and modification time, so a changed,
        # added or removed image (or another tree with the same names) is never served
        # stale cached features.
        digest = hashlib.sha256()
        for label, cls in enumerate(self.classes):
            cls_dir = split_dir / cls
            if not cls_dir.is_dir():
                continue
            for p in sorted(cls_dir.rglob("*")):
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                    self.paths.append(p)
                    self.targets.append(label)
                    st = p.stat()
                    digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        if not self.paths:
            raise MissingDataError(f"no images under {split_dir}. Expected layout: {LAYOUT}")
        self.identity = f"imagefolder:{digest.hexdigest()[:20]}"

    def class_dir(self, label: int) -> Path:
        """The folder of class ``label`` in this split (it may be missing or empty)."""
        return self.root / self.split / self.classes[label]
