"""Every image below a folder, searched recursively: any image collection on disk, labelled or not.

Lists every file below ``root`` whose suffix is one of :data:`IMAGE_SUFFIXES` (any case; hidden files and folders
included, symlinked files followed), sorted by path (``pathlib`` order: part by part), so the ImageNet train layout
``root/<class>/xxx.JPEG`` and any image-only collection (``root/a/b/c.png``) work alike. When every image lies
directly in a sub-folder of ``root`` (``root/<class>/*.jpg``), those sub-folders are the classes: sorted folder
names, ImageNet wnids named with CLIP's class names and other folders with ``_`` as spaces, one by one (only
folders that hold an image count). Otherwise the tree has no classes (``Sample.label`` -1).

Sample ids are paths relative to ``root`` (``n01440764/n01440764_10026.JPEG``). Prompts are
``prompt_template.format(classname)`` for a labelled tree and empty for an unlabelled one (use it with targets
that do not read the prompt, such as a classifier's own head). Pixels: float32 in [0, 1], resized and
centre-cropped with CLIP's preprocessing. ``aft-bench train --data FOLDER`` trains on this dataset
(:mod:`aft_bench.training.data_spec`); :mod:`aft_bench.data.image_folder` is the evaluation layout of class folders
with its split, class-name and file-list options (``.jpg``/``.jpeg``/``.png`` only, hidden files ignored).
"""

from __future__ import annotations

from pathlib import Path

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Sample
from aft_bench.data.class_images import ClassImages
from aft_bench.data.classnames import imagenet_classname, is_imagenet_wnid
from aft_bench.data.file_samples import FileSamples
from aft_bench.data.io import read_image
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE
from aft_bench.data.transforms import resize_center_crop

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif"})


def tree_files(root: Path) -> list[Path]:
    """Every file below ``root`` with an image suffix (any case), in sorted path order."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def folder_classname(folder: str) -> str:
    """A class folder's name for prompts: CLIP's ImageNet name of a wnid, else the name with ``_`` as spaces."""
    return imagenet_classname(folder) if is_imagenet_wnid(folder) else folder.replace("_", " ")


@DATASETS.register("image_tree", help="every image below --data-root, recursively; sub-folders as classes when flat")
class ImageTree(FileSamples, ClassImages):
    """The images below a folder (see the module docstring).

    Args:
        image_size: (height, width) of the returned images.
        root: The folder.
        on_error: ``"raise"`` or ``"skip"`` (accepted for the common signature; listing cannot fail per image, and
            an unreadable image raises in :meth:`load`).
        prompt_template: Text with one ``{}`` for the class name (labelled trees).

    Attributes:
        root: The folder.
        files: The image files, in :meth:`ids` order.
        folders: The class folder names in label order (empty for an unlabelled tree).
        classnames: Their names for prompts, same order (empty for an unlabelled tree).
        skipped: Always empty (nothing is skipped while listing).

    Raises:
        DataError: If ``root`` is not given, not a folder, or has no image file below it.
    """

    dataset_name = "image tree"

    def __init__(self, image_size: tuple[int, int] | int, root: str | Path | None = None, on_error: str = "raise",
                 prompt_template: str = DEFAULT_TEMPLATE) -> None:
        super().__init__(image_size, on_error, prompt_template)
        if root is None:
            raise DataError("the image_tree dataset needs --data-root pointing at a folder of images")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"image tree {str(self.root)!r} is not a directory; pass --data-root pointing at a "
                            "folder of images")
        self.files = tree_files(self.root)
        if not self.files:
            raise DataError(f"{self.root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found below it")
        self._list([p.relative_to(self.root).as_posix() for p in self.files], self.files, self.root)
        labelled = all(p.parent.parent == self.root for p in self.files)
        self.folders = sorted({p.parent.name for p in self.files}) if labelled else []
        self.classnames = [folder_classname(f) for f in self.folders]
        label_of = {folder: label for label, folder in enumerate(self.folders)}
        self._labels = [label_of[p.parent.name] for p in self.files] if labelled else [-1] * len(self.files)

    def label(self, sample_id: str) -> int:
        """The class index of a sample (-1 in an unlabelled tree), without reading the image."""
        return self._labels[self._position(sample_id)]

    def labels(self) -> list[int]:
        """Class indices of all samples in :meth:`ids` order."""
        return list(self._labels)

    def load(self, sample_id: str) -> Sample:
        """Reads and resizes one image.

        Raises:
            DataError: If the id is unknown or the file is missing or unreadable (the message names it).
        """
        position = self._position(sample_id)
        label = self._labels[position]
        return Sample(id=sample_id, image=resize_center_crop(read_image(self._files[position]), self.image_size),
                      prompt=self.prompt_template.format(self.classnames[label]) if label >= 0 else "", label=label)
