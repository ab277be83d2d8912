"""The appendix A.4 question and LLaVA-1.5's conversation template."""

import pytest

from aft_bench.data.classnames import imagenet_classname
from aft_bench.data.imagenette import IMAGENETTE_CLASSES, IMAGENETTE_WNIDS
from aft_bench.models.vlm.prompt import class_question, llava_conversation


def test_question_lists_the_classes_in_order():
    question = class_question(["circle", "square", "cross"])
    assert question == ("Please select one class from circle, square, cross to describe the image. "
                        "Only output the class name.")


def test_imagenette_question_is_the_papers():
    assert class_question(IMAGENETTE_CLASSES).startswith(
        "Please select one class from tench, English springer, cassette player, chain saw, church, French horn, "
        "garbage truck, gas pump, golf ball, parachute to describe")


def test_imagenette_wnids_name_the_classes():
    assert len(IMAGENETTE_WNIDS) == len(set(IMAGENETTE_WNIDS)) == 10
    names = [imagenet_classname(wnid).lower() for wnid in IMAGENETTE_WNIDS]
    for name, expected in zip(names, IMAGENETTE_CLASSES, strict=True):
        assert expected.lower().split()[0] in name


@pytest.mark.parametrize("bad", [[], ["a", ""], ["a", "a"]])
def test_bad_class_lists_are_refused(bad):
    with pytest.raises(ValueError, match="class names"):
        class_question(bad)


def test_conversation_puts_the_image_first():
    assert llava_conversation("Q?") == "USER: <image>\nQ? ASSISTANT:"
