"""FGVC-Aircraft (Maji et al. 2013), 100 aircraft variants, a zero-shot dataset of the AFT paper's Table 2
(after CLIP's benchmark)::

    fgvc-aircraft-2013b/data/images/<id>.jpg
    fgvc-aircraft-2013b/data/variants.txt                     one variant name per line (the classes)
    fgvc-aircraft-2013b/data/images_variant_test.txt          lines "<id> <variant name>"

Variant names may contain spaces (``"Cessna 172"``); classes follow ``variants.txt``. The images keep
their copyright banner at the bottom, as CLIP's benchmark evaluates them.
"""

from __future__ import annotations

from pathlib import Path

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE, LabelledImages, check_choice, resolve_root

SPLITS = ("test", "trainval", "train", "val")
LAYOUT = "the fgvc-aircraft-2013b folder holding data/images/ and data/variants.txt"


@DATASETS.register("fgvc_aircraft", help="FGVC-Aircraft 2013b variants (data/images/), split=test|trainval|...")
class FGVCAircraft(LabelledImages):
    """FGVC-Aircraft images with variant names for prompts.

    Args:
        image_size: (height, width) of the returned images.
        root: The ``fgvc-aircraft-2013b`` folder (or the folder it was extracted into).
        on_error: ``"raise"`` or ``"skip"`` for list lines whose image is missing.
        split: ``"test"`` (3,333 images), ``"trainval"``, ``"train"`` or ``"val"``.
        prompt_template: Text with one ``{}`` (CLIP: "a photo of a {}, a type of aircraft.").
    """

    dataset_name = "FGVC-Aircraft"

    def __init__(self, image_size: tuple[int, int] | int, root: str | Path | None = None, on_error: str = "raise",
                 split: str = "test", prompt_template: str = DEFAULT_TEMPLATE) -> None:
        super().__init__(image_size, on_error, prompt_template)
        check_choice("split", split, SPLITS, self.dataset_name)
        self.root = resolve_root(root, self.dataset_name, LAYOUT, lambda p: (p / "data" / "variants.txt").is_file(),
                                 ("fgvc-aircraft-2013b",))
        data = self.root / "data"
        variants = [line.strip() for line in (data / "variants.txt").read_text().splitlines() if line.strip()]
        index = {name: i for i, name in enumerate(variants)}
        listing = data / f"images_variant_{split}.txt"
        if not listing.is_file():
            raise DataError(f"FGVC-Aircraft: {listing} is missing; pass --data-root pointing at {LAYOUT}")
        entries = []
        for number, line in enumerate(listing.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            image, _, variant = line.strip().partition(" ")
            if variant not in index:
                raise DataError(f"{listing} line {number}: variant {variant!r} is not in variants.txt")
            path = data / "images" / f"{image}.jpg"
            if path.is_file():
                entries.append((f"data/images/{image}.jpg", path, index[variant]))
            else:
                self._problem("image missing", f"{path} (listed in {listing.name}) does not exist")
        self._set_entries(variants, entries, self.root)
