"""Oxford-IIIT Pet, FGVC-Aircraft, Flowers-102 and Stanford Cars loaders on fixtures in their real formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat
from test_labelled_datasets import COLOURS, dominant_channel, write_image

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Dataset
from aft_bench.data.fgvc_aircraft import FGVCAircraft
from aft_bench.data.flowers102 import Flowers102
from aft_bench.data.oxford_pets import OxfordPets
from aft_bench.data.stanford_cars import StanfordCars


def test_oxford_pets_names_classes_from_the_images(tmp_path: Path) -> None:
    root = tmp_path / "oxford-iiit-pet"
    rows = [("Abyssinian_201", 1), ("american_bulldog_100", 2), ("Abyssinian_202", 1), ("basset_hound_7", 3)]
    for image, class_id in rows:
        write_image(root / "images" / f"{image}.jpg", COLOURS[class_id - 1])
    (root / "annotations").mkdir()
    (root / "annotations" / "test.txt").write_text("".join(f"{i} {c} 1 {c}\n" for i, c in rows))
    data = OxfordPets(16, root=tmp_path)
    assert isinstance(data, Dataset) and DATASETS.get("oxford_pets") is OxfordPets
    assert data.classnames == ["Abyssinian", "american bulldog", "basset hound"]
    assert data.ids()[1] == "images/american_bulldog_100.jpg" and data.labels() == [0, 1, 0, 2]
    sample = data.load("images/basset_hound_7.jpg")
    assert sample.prompt == "a photo of a basset hound." and dominant_channel(sample.image) == 2
    (root / "images" / "Abyssinian_202.jpg").unlink()
    with pytest.raises(DataError, match="Abyssinian_202.jpg.*does not exist"):
        OxfordPets(16, root=root)
    assert len(OxfordPets(16, root=root, on_error="skip")) == 3


def test_fgvc_aircraft_variants_with_spaces(tmp_path: Path) -> None:
    data_dir = tmp_path / "fgvc-aircraft-2013b" / "data"
    (data_dir / "images").mkdir(parents=True)
    (data_dir / "variants.txt").write_text("707-320\nCessna 172\nA340-500\n")
    for k, image in enumerate(("1025794", "0062781", "1340192")):
        write_image(data_dir / "images" / f"{image}.jpg", COLOURS[k])
    (data_dir / "images_variant_test.txt").write_text("1025794 707-320\n0062781 Cessna 172\n1340192 A340-500\n")
    data = FGVCAircraft(16, root=tmp_path)
    assert data.classnames == ["707-320", "Cessna 172", "A340-500"] and data.labels() == [0, 1, 2]
    assert data.load("data/images/0062781.jpg").prompt == "a photo of a Cessna 172."
    (data_dir / "images_variant_test.txt").write_text("1025794 Boeing 999\n")
    with pytest.raises(DataError, match="variant 'Boeing 999' is not in variants.txt"):
        FGVCAircraft(16, root=tmp_path)


def test_flowers102_reads_the_matlab_labels_and_split(tmp_path: Path) -> None:
    labels = np.array([[2, 1, 3, 2, 1]], dtype=np.uint8)  # MATLAB row vector, classes 1..3
    savemat(tmp_path / "imagelabels.mat", {"labels": labels})
    savemat(tmp_path / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3]]),
                                     "tstid": np.array([[5, 4]])})
    for number in range(1, 6):
        write_image(tmp_path / "jpg" / f"image_{number:05d}.jpg", COLOURS[int(labels[0, number - 1]) - 1])
    names = tmp_path / "names.txt"
    names.write_text("pink primrose\nhard-leaved pocket orchid\ncanterbury bells\n")
    data = Flowers102(16, root=tmp_path, classnames=names)
    assert data.ids() == ["jpg/image_00005.jpg", "jpg/image_00004.jpg"] and data.labels() == [0, 1]
    sample = data.load("jpg/image_00004.jpg")
    assert sample.prompt == "a photo of a hard-leaved pocket orchid." and dominant_channel(sample.image) == 1
    assert Flowers102(16, root=tmp_path, classnames=names, split="val").labels() == [2]
    with pytest.raises(DataError, match="names no classes"):
        Flowers102(16, root=tmp_path)
    names.write_text("only one\n")
    with pytest.raises(DataError, match="1 names for 3 classes"):
        Flowers102(16, root=tmp_path, classnames=names)


def test_stanford_cars_reads_the_devkit_structs(tmp_path: Path) -> None:
    (tmp_path / "devkit").mkdir()
    savemat(tmp_path / "devkit" / "cars_meta.mat",
            {"class_names": np.array([["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]], dtype=object)})
    annotations = np.zeros((1, 3), dtype=[("bbox_x1", "O"), ("class", "O"), ("fname", "O")])
    for k, (label, name) in enumerate([(2, "00001.jpg"), (1, "00002.jpg"), (2, "00003.jpg")]):
        annotations[0, k] = (np.array([[5]]), np.array([[label]]), np.array([name]))
        write_image(tmp_path / "cars_test" / name, COLOURS[label - 1])
    savemat(tmp_path / "cars_test_annos_withlabels.mat", {"annotations": annotations})
    data = StanfordCars(16, root=tmp_path)
    assert DATASETS.get("stanford_cars") is StanfordCars
    assert data.classnames == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"] and data.labels() == [1, 0, 1]
    sample = data.load("cars_test/00002.jpg")
    assert sample.prompt == "a photo of a AM General Hummer SUV 2000." and dominant_channel(sample.image) == 0
    (tmp_path / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DataError, match="no cars_test_annos_withlabels.mat"):
        StanfordCars(16, root=tmp_path)
