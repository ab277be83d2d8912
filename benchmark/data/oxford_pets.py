"""Oxford-IIIT Pet (Parkhi et al. 2012), 37 cat and dog breeds, a zero-shot dataset of the AFT paper's
Table 2 (after CLIP's benchmark)::

    oxford-iiit-pet/images/<Breed_name>_<n>.jpg
    oxford-iiit-pet/annotations/test.txt, trainval.txt   lines "<image> <class id 1..37> <species> <breed id>"

The class of an image is its list line's class id; the class names come from the image names (the part
before the last ``_``, with ``_`` as spaces: ``american_bulldog_100`` -> "american bulldog"), as CLIP's
benchmark names them.
"""

from __future__ import annotations

from pathlib import Path

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE, LabelledImages, check_choice, resolve_root

SPLITS = {"test": "test.txt", "trainval": "trainval.txt"}
LAYOUT = "the oxford-iiit-pet folder holding images/ and annotations/test.txt"


@DATASETS.register("oxford_pets", help="Oxford-IIIT Pet (images/, annotations/test.txt), split=test|trainval")
class OxfordPets(LabelledImages):
    """Oxford-IIIT Pet images with breed names for prompts.

    Args:
        image_size: (height, width) of the returned images.
        root: The ``oxford-iiit-pet`` folder (or the folder it was extracted into).
        on_error: ``"raise"`` or ``"skip"`` for list lines whose image is missing.
        split: ``"test"`` (3,669 images) or ``"trainval"`` (3,680).
        prompt_template: Text with one ``{}`` for the class name (CLIP: "a photo of a {}, a type of pet.").
    """

    dataset_name = "Oxford-IIIT Pet"

    def __init__(self, image_size: tuple[int, int] | int, root: str | Path | None = None, on_error: str = "raise",
                 split: str = "test", prompt_template: str = DEFAULT_TEMPLATE) -> None:
        super().__init__(image_size, on_error, prompt_template)
        check_choice("split", split, tuple(SPLITS), self.dataset_name)
        self.root = resolve_root(root, self.dataset_name, LAYOUT,
                                 lambda p: (p / "annotations" / SPLITS[split]).is_file(), ("oxford-iiit-pet",))
        listing = self.root / "annotations" / SPLITS[split]
        rows: list[tuple[str, int]] = []
        names: dict[int, str] = {}
        for number, line in enumerate(listing.read_text().splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise DataError(f"{listing} line {number}: {line!r} is not '<image> <class id> ...'")
            image, class_id = parts[0], int(parts[1])
            names.setdefault(class_id, image.rsplit("_", 1)[0].replace("_", " "))
            rows.append((image, class_id))
        if sorted(names) != list(range(1, len(names) + 1)):
            raise DataError(f"{listing}: class ids {sorted(names)[:5]}... are not 1..{len(names)}")
        entries = []
        for image, class_id in rows:
            path = self.root / "images" / f"{image}.jpg"
            if path.is_file():
                entries.append((f"images/{image}.jpg", path, class_id - 1))
            else:
                self._problem("image missing", f"{path} (listed in {listing.name}) does not exist")
        self._set_entries([names[i] for i in sorted(names)], entries, self.root)
