"""An opt-in disk cache of loaded samples (``--cache-samples``): a second pass over a file dataset (the next encoder
of a run, or a later run) reads each sample's resized pixels instead of decoding its JPEG/PNG again.

:class:`SampleCache` wraps a dataset that lists the files each sample is read from (:class:`FileDataset`, its
``source_files(id)``). ``load(id)`` returns exactly what the dataset's ``load(id)`` returns (same dtype, the same
bits, prompt and label): the first time it calls the dataset and stores the sample, afterwards it reads the stored
one while the sample's source files are unchanged.

Where: ``cache_dir()/samples/<Class>-<H>x<W>-<key>/`` (:func:`aft_bench.core.cache.cache_dir`, ``$AFT_BENCH_CACHE``),
``key`` a hash of what the samples depend on: the dataset's class (module and qualified name) and its
``data_version`` where it declares one, the resolved data root, the dataset's arguments, the image size and
:data:`FORMAT_VERSION`. The folder's ``key.json`` records them. Each sample is one safetensors file (no pickle),
``<h[:2]>/<h>.safetensors`` with ``h`` a hash of its id: its tensor fields (``image``; ``mask`` when it has one)
as tensors and, as metadata, its other fields (id, prompt, label) in JSON, the fingerprint of its source files
(path, size and ``mtime_ns`` of each), the format version and a CRC-32 of all of these. Size: about 200 KB a sample
at 224 x 224 (150 KB of uint8 pixels, 50 KB of int8 mask; float32 pixels take four times as much).

Validity: a sample whose source files' fingerprint differs from the stored one (a file touched, rewritten or moved)
is decoded again and its entry rewritten. An entry that cannot be read or fails its checksum (truncated, corrupt) is
decoded again and rewritten with one warning, never returned. A :class:`~aft_bench.data.base.DataError` of the
dataset's ``load`` propagates unchanged and nothing is stored. A change within one ``mtime_ns`` tick that keeps
a file's size is not seen (as for ``make``).

Entries are written to a temp file and renamed into place (:func:`aft_bench.core.atomic.atomic_write`), so DataLoader
workers (forked) fill the cache concurrently and a reader never sees half an entry. A cache that cannot be written
(full disk, read-only folder) warns once and the samples are served from the dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.core.cache import cache_dir
from aft_bench.data.base import Dataset, Sample
from aft_bench.results.keys import run_key, safe_name

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped when the layout of an entry changes (part of the folder key, and recorded in each entry)."""
CACHE_FOLDER = "samples"
"""The sample caches' folder under :func:`aft_bench.core.cache.cache_dir`."""
SUFFIX = ".safetensors"
KEY_FILE = "key.json"


@runtime_checkable
class FileDataset(Dataset, Protocol):
    """A dataset whose samples are read from files it can name, so that a cached sample can be checked against them.

    ``source_files(sample_id)`` lists every file ``load(sample_id)`` reads (image, mask, annotation file, ...): a
    change to any of them (size or modification time) makes the cache decode the sample again.
    """

    def source_files(self, sample_id: str) -> Sequence[Path]:
        """The files ``load(sample_id)`` reads."""
        ...


def check_cacheable(dataset: Dataset | type, name: str | None = None) -> None:
    """Refuses a dataset (an instance or its class) that does not list its samples' source files.

    Raises:
        ValueError: Naming the dataset (``name``, its registry name, or its class) and the datasets the option is for.
    """
    if callable(getattr(dataset, "source_files", None)):
        return
    cls = dataset if isinstance(dataset, type) else type(dataset)
    raise ValueError(
        f"--cache-samples: dataset {name or cls.__name__!r} ({cls.__module__}.{cls.__qualname__}) does not list the "
        "files its samples are read from (it has no source_files method), so its samples cannot be cached and "
        "checked against them; the option works for datasets read from image files (ImageNet-S, "
        "ImageNet-Segmentation, image folders); drop --cache-samples for this dataset"
    )


def fingerprint(files: Sequence[str | Path]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of each file, in order.

    Raises:
        OSError: If a file cannot be stat'ed (missing).
    """
    out: list[list[Any]] = []
    for path in files:
        stat = os.stat(path)
        out.append([str(path), stat.st_size, stat.st_mtime_ns])
    return out


def cache_key(dataset: Dataset, image_size: tuple[int, int], arguments: Mapping[str, Any],
              data_root: str | Path | None = None) -> tuple[str, dict[str, Any]]:
    """The cache folder's name, ``<Class>-<H>x<W>-<hash>``, and the parts it hashes.

    The data root is the dataset's own resolved ``root`` where it has one, else ``data_root`` resolved.
    """
    cls = type(dataset)
    root = getattr(dataset, "root", None) or data_root
    parts = {
        "format": FORMAT_VERSION, "dataset": f"{cls.__module__}.{cls.__qualname__}",
        "data_version": getattr(cls, "data_version", None),
        "root": None if root is None else str(Path(root).expanduser().resolve()),
        "arguments": dict(arguments), "image_size": [int(image_size[0]), int(image_size[1])],
    }
    name = f"{safe_name(cls.__name__)}-{parts['image_size'][0]}x{parts['image_size'][1]}-{run_key(parts)}"
    return name, parts


class CorruptEntry(ValueError):
    """A cache entry that cannot be read back as the sample it was written from."""


def _checksum(metadata: Mapping[str, str], tensors: Mapping[str, Tensor]) -> str:
    """CRC-32 of an entry's metadata (all but the checksum) and of each tensor's name, dtype, shape and bytes."""
    crc = zlib.crc32(json.dumps({k: v for k, v in metadata.items() if k != "crc32"}, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        crc = zlib.crc32(f"{name}:{tensor.dtype}:{list(tensor.shape)}".encode(), crc)
        crc = zlib.crc32(tensor.contiguous().view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"


def write_entry(path: Path, sample: Sample, files: list[list[Any]]) -> None:
    """Stores ``sample`` (made from the source files of fingerprint ``files``) at ``path``, atomically."""
    values = {f.name: getattr(sample, f.name) for f in dataclasses.fields(sample)}
    tensors = {name: value.detach().cpu().contiguous() for name, value in values.items() if isinstance(value, Tensor)}
    plain = {name: value for name, value in values.items() if name not in tensors}
    metadata = {"format": str(FORMAT_VERSION), "sample": json.dumps(plain, sort_keys=True),
                "fingerprint": json.dumps(files)}
    metadata["crc32"] = _checksum(metadata, tensors)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_entry(path: Path, sample_id: str) -> tuple[Sample, list[list[Any]]]:
    """The sample stored at ``path`` and the fingerprint of the files it was made from.

    Raises:
        FileNotFoundError: If there is no entry.
        CorruptEntry: If the entry is unreadable, of another format or sample, or fails its checksum.
    """
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - not a dict
        if metadata.get("format") != str(FORMAT_VERSION):
            raise CorruptEntry(f"of format {metadata.get('format')!r}, not {FORMAT_VERSION}")
        if metadata.get("crc32") != _checksum(metadata, tensors):
            raise CorruptEntry("damaged (checksum mismatch)")
        plain = json.loads(metadata["sample"])
        if plain.get("id") != sample_id:
            raise CorruptEntry(f"the entry of sample {plain.get('id')!r}")
        return Sample(**plain, **tensors), json.loads(metadata["fingerprint"])
    except CorruptEntry:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"unreadable ({type(exc).__name__}: {exc})") from exc


class SampleCache:
    """``dataset`` with its loaded samples cached on disk (see the module docstring).

    Args:
        dataset: A dataset with ``source_files`` (:class:`FileDataset`; :func:`check_cacheable`).
        image_size: The (H, W) the dataset was built with.
        arguments: The keyword arguments the dataset was built with (other than ``image_size``, the root and
            ``on_error``, which change no sample's pixels).
        data_root: The run's data root, for a dataset that keeps no resolved ``root`` of its own.
        name: The dataset's registry name, for messages (default: its class name).
        folder: Where the cache folders go (default ``cache_dir()/samples``).

    Raises:
        ValueError: If the dataset does not list its samples' source files.
    """

    def __init__(self, dataset: Dataset, image_size: tuple[int, int], arguments: Mapping[str, Any] | None = None,
                 data_root: str | Path | None = None, name: str | None = None,
                 folder: str | Path | None = None) -> None:
        check_cacheable(dataset, name)
        self.dataset = cast(FileDataset, dataset)
        key, parts = cache_key(dataset, image_size, arguments or {}, data_root)
        self.folder = (cache_dir() / CACHE_FOLDER if folder is None else Path(folder)) / key
        self._writable = True
        try:
            if not (self.folder / KEY_FILE).is_file():
                atomic_write_text(self.folder / KEY_FILE, json.dumps(parts, indent=2, sort_keys=True, default=str))
        except OSError as exc:
            self._cannot_write(exc)
        log.info("caching the samples of %s in %s", name or type(dataset).__name__, self.folder)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def classnames(self) -> list[str]:
        """The dataset's class names."""
        return self.dataset.classnames

    def ids(self) -> list[str]:
        """The dataset's sample ids."""
        return self.dataset.ids()

    def entry(self, sample_id: str) -> Path:
        """The file of a sample's entry."""
        digest = hashlib.sha256(sample_id.encode()).hexdigest()[:32]
        return self.folder / digest[:2] / f"{digest}{SUFFIX}"

    def load(self, sample_id: str) -> Sample:
        """The stored sample while its source files are unchanged, else the dataset's (then stored).

        Raises:
            DataError: What the dataset's ``load`` raises, unchanged.
        """
        try:
            files = fingerprint(self.dataset.source_files(sample_id))
        except OSError:  # a missing file: the dataset's load names it
            return self.dataset.load(sample_id)
        path = self.entry(sample_id)
        try:
            sample, stored = read_entry(path, sample_id)
            if stored == files:
                return sample
            log.debug("sample %s: its source files changed; decoding it again", sample_id)
        except FileNotFoundError:
            pass
        except CorruptEntry as exc:
            log.warning("sample cache entry %s of sample %r is %s; decoding the sample again and rewriting it",
                        path, sample_id, exc)
        sample = self.dataset.load(sample_id)
        if self._writable:
            try:
                write_entry(path, sample, files)
            except OSError as exc:
                self._cannot_write(exc)
        return sample

    def _cannot_write(self, exc: OSError) -> None:
        """Warns once that the cache cannot be written; samples come from the dataset from then on."""
        self._writable = False
        log.warning("cannot write the sample cache %s (%s); loading samples without it (set $AFT_BENCH_CACHE to "
                    "a writable folder with room, about 200 KB a sample at 224 px)", self.folder, exc)

    def __getattr__(self, name: str) -> Any:
        """Anything else (``source_files``, ``label``, ``skipped``, ``root``, ...) is the wrapped dataset's."""
        if name.startswith("__") or name in ("dataset", "folder", "_writable"):
            raise AttributeError(name)
        return getattr(self.dataset, name)
