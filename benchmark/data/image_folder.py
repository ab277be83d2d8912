"""Any image classification set stored as class folders: ImageNet val, ImageNet-R, ImageNet-Sketch,
ImageNet-A, EuroSAT, ... (the zero-shot datasets of the paper's Table 2 that ship in this layout)::

    root/<class>/<image>.{jpg,jpeg,png}           or, with --dataset-arg split=NAME,
    root/NAME/<class>/<image>.{jpg,jpeg,png}

Classes are the sub-folders, sorted. Their names for the prompts come from, in this order:

1. ``classnames=FILE``: a text file with one ``folder<TAB>name`` (or ``folder,name``) line per class, or
   one name per line in sorted-folder order; or ``classnames=clip_benchmark:<dataset>`` for CLIP
   Benchmark's names in sorted-folder order (``eurosat``, ``caltech101``; :mod:`aft_bench.data.clip_benchmark`);
2. CLIP's ImageNet class names, when every folder is an ImageNet-1k WordNet id (``n01440764``);
3. the folder name with ``_`` as spaces.

``files=FILE`` keeps only the images a split list names, one path per line relative to the folder of class
folders (its first word; DTD's ``labels/test1.txt`` lists ``banded/banded_0004.jpg``); a listed image that
does not exist is a listing problem (``--on-error``).

Sample ids are paths relative to ``root`` (``n01440764/ILSVRC2012_val_00000293.JPEG``). Labels index the
sorted folders; for ImageNet subsets (ImageNet-R has 200 classes) they index the subset, not the 1000.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError
from aft_bench.data.classnames import imagenet_classname, is_imagenet_wnid
from aft_bench.data.clip_benchmark import clip_benchmark_classnames, is_clip_benchmark
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE, LabelledImages, image_files, subdirs

LAYOUT = "a folder of class folders (root/<class>/*.jpg), or one holding split folders (--dataset-arg split=...)"


def read_classnames(path: Path, folders: list[str]) -> list[str]:
    """Class names for ``folders`` from a ``classnames`` file (see the module docstring).

    Raises:
        DataError: Naming the file, if it is unreadable, names a folder twice, misses a folder, or (in the
            one-name-per-line form) has another number of lines than there are folders.
    """
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise DataError(f"cannot read classnames file {path}: {exc}") from exc
    pairs = [line.split("\t", 1) if "\t" in line else line.split(",", 1) for line in lines]
    if all(len(p) == 2 for p in pairs) and {p[0].strip() for p in pairs} & set(folders):
        mapping: dict[str, str] = {}
        for folder, name in pairs:
            if folder.strip() in mapping:
                raise DataError(f"classnames file {path} names folder {folder.strip()!r} twice")
            mapping[folder.strip()] = name.strip()
        missing = [f for f in folders if f not in mapping]
        if missing:
            raise DataError(f"classnames file {path} has no name for the class folder(s) {missing[:5]}")
        return [mapping[f] for f in folders]
    if len(lines) != len(folders):
        raise DataError(f"classnames file {path} has {len(lines)} names for {len(folders)} class folders; give one "
                        "name per line in sorted-folder order, or 'folder<TAB>name' lines")
    return lines


@DATASETS.register("image_folder", help="class folders (ImageNet val/-R/-Sketch, EuroSAT...); split, classnames, files")
class ImageFolder(LabelledImages):
    """Class-folder images with prompts from the class names (see the module docstring).

    Args:
        image_size: (height, width) of the returned images.
        root: The folder of class folders (or of split folders).
        on_error: ``"raise"`` or ``"skip"`` for problems of a ``files`` list (a listed image that is missing).
        split: A sub-folder of ``root`` that holds the class folders (``val``, ``test``, ...), or None.
        classnames: Optional file of class names (see the module docstring).
        files: Optional list of the images to use (see the module docstring).
        prompt_template: Text with one ``{}`` for the class name.

    Attributes:
        classnames: Names of the classes in sorted-folder order; ``Sample.label`` indexes it.
        folders: The class folder names, same order.

    Raises:
        DataError: If ``root`` or the split folder is missing, has no class folders or no images.
    """

    dataset_name = "image folder"

    def __init__(
        self,
        image_size: tuple[int, int] | int,
        root: str | Path | None = None,
        on_error: str = "raise",
        split: str | None = None,
        classnames: str | Path | None = None,
        files: str | Path | None = None,
        prompt_template: str = DEFAULT_TEMPLATE,
    ) -> None:
        super().__init__(image_size, on_error, prompt_template)
        if root is None:
            raise DataError(f"the image_folder dataset needs --data-root pointing at {LAYOUT}")
        self.root = Path(root).expanduser()
        folder = self.root / split if split else self.root
        if not folder.is_dir():
            found = subdirs(self.root) if self.root.is_dir() else []
            raise DataError(f"image folder {str(folder)!r} is not a directory (sub-folders of the root: "
                            f"{found[:10] or 'none'}); pass --data-root pointing at {LAYOUT}")
        self.folders = subdirs(folder)
        if not self.folders:
            raise DataError(f"image folder {str(folder)!r} has no class folders; pass --data-root pointing at {LAYOUT}")
        if is_clip_benchmark(classnames):
            names = clip_benchmark_classnames(str(classnames))
            if len(names) != len(self.folders):
                raise DataError(f"{classnames} has {len(names)} class names for the {len(self.folders)} class "
                                f"folders of {folder}; use the folder set CLIP Benchmark uses, or a names file")
        elif classnames is not None:
            names = read_classnames(Path(classnames).expanduser(), self.folders)
        elif all(is_imagenet_wnid(f) for f in self.folders):
            names = [imagenet_classname(f) for f in self.folders]
        else:
            names = [f.replace("_", " ") for f in self.folders]
        if files is None:
            entries = [(path.relative_to(self.root).as_posix(), path, label)
                       for label, name in enumerate(self.folders) for path in image_files(folder / name)]
        else:
            entries = list(self._listed(Path(files).expanduser(), folder))
        self._set_entries(names, entries, folder)

    def _listed(self, listing: Path, folder: Path) -> Iterator[tuple[str, Path, int]]:
        """The entries of the images ``listing`` names (their class is their folder)."""
        label_of = {name: label for label, name in enumerate(self.folders)}
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DataError(f"cannot read the image list {listing}: {exc}") from exc
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            relative = line.split()[0]
            class_folder = relative.split("/", 1)[0]
            path = folder / relative
            if class_folder not in label_of or "/" not in relative:
                self._problem("listed outside the class folders",
                              f"{listing} line {number}: {relative!r} is not <class folder>/<image>")
            elif not path.is_file():
                self._problem("image missing", f"{path} (listed in {listing.name}) does not exist")
            else:
                yield path.relative_to(self.root).as_posix(), path, label_of[class_folder]
