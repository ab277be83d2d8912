"""ImageNet-1k class tables, offline: WordNet ids, class indices and human-readable names.

The standard 1000-class index order is the sorted list of WordNet ids (``n01440764`` = 0, tench, ...).
Both tables come from installed packages, so nothing is downloaded:

* the synset list shipped with timm (``timm.data.ImageNetInfo``), sorted wnids;
* the cleaned class names of the CLIP paper (Radford et al. 2021, "Learning transferable visual models
  from natural language supervision"), shipped by open_clip as ``IMAGENET_CLASSNAMES`` in the same index
  order; these are the names CLIP's zero-shot prompts use.
"""

from __future__ import annotations

import difflib
from functools import lru_cache

from aft_bench.data.base import DataError

NUM_IMAGENET_CLASSES = 1000


@lru_cache(maxsize=1)
def _tables() -> tuple[tuple[str, ...], tuple[str, ...], dict[str, int]]:
    """Loads (wnids, names, wnid -> index) once and checks the two packages agree."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from timm.data import ImageNetInfo

    wnids = tuple(ImageNetInfo("imagenet-1k").label_names())
    names = tuple(IMAGENET_CLASSNAMES)
    if len(wnids) != NUM_IMAGENET_CLASSES or len(names) != NUM_IMAGENET_CLASSES:
        raise RuntimeError(
            f"ImageNet class tables disagree: timm lists {len(wnids)} synsets, open_clip {len(names)} names "
            f"(expected {NUM_IMAGENET_CLASSES} each); reinstall timm and open_clip_torch"
        )
    if list(wnids) != sorted(wnids):
        raise RuntimeError("timm's ImageNet synset list is not in sorted order; reinstall timm")
    return wnids, names, {w: i for i, w in enumerate(wnids)}


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (sorted)."""
    return list(_tables()[0])


def imagenet_classnames() -> list[str]:
    """The 1000 CLIP class names in class-index order (``labels`` of every ImageNet dataset index this)."""
    return list(_tables()[1])


def is_imagenet_wnid(wnid: str) -> bool:
    """Whether ``wnid`` is one of the 1000 ImageNet-1k classes."""
    return wnid in _tables()[2]


def imagenet_index(wnid: str) -> int:
    """Class index (0..999) of an ImageNet-1k WordNet id.

    Raises:
        DataError: If ``wnid`` is not an ImageNet-1k class; the message suggests close ids.
    """
    index = _tables()[2].get(wnid)
    if index is None:
        close = difflib.get_close_matches(wnid, _tables()[0], n=3, cutoff=0.8)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise DataError(
            f"{wnid!r} is not an ImageNet-1k WordNet id (expected e.g. 'n01440764').{hint} "
            "Check the folder names of the dataset."
        )
    return index


def imagenet_classname(wnid: str) -> str:
    """CLIP's human-readable name of an ImageNet-1k class, e.g. ``'n01440764' -> 'tench'``."""
    return _tables()[1][imagenet_index(wnid)]
