"""What every dataset with one class label per image shares, whether it reads image files
(:class:`~aft_bench.data.labelled_folders.LabelledImages`) or arrays
(:class:`~aft_bench.data.array_images.ArrayImages`): validated settings, the class names, the skip counts,
and the :class:`~aft_bench.data.base.Sample` that pixels and a label make (CLIP's preprocessing, and the
prompt ``prompt_template.format(classname)``, Radford et al. 2021).
"""

from __future__ import annotations

from torch import Tensor

from aft_bench.data.base import Sample
from aft_bench.data.transforms import resize_center_crop

ON_ERROR_CHOICES = ("raise", "skip")


def check_image_size(image_size: tuple[int, int] | int) -> tuple[int, int]:
    """Returns ``(height, width)``; an int means a square."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(isinstance(s, bool) or int(s) != s or s <= 0 for s in size):
        raise ValueError(f"image_size must be two positive integers (height, width), got {image_size!r}")
    return int(size[0]), int(size[1])


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error


class ClassImages:
    """Base of the class-labelled datasets (see the module docstring).

    Args:
        image_size: (height, width) of the returned images (shorter-side resize + center crop).
        on_error: ``"raise"`` or ``"skip"``: what a subclass does with a listing problem.
        prompt_template: Text with one ``{}`` for the class name.

    Attributes:
        classnames: Class names; ``Sample.label`` indexes this list.
        skipped: Count of skipped listing problems per reason.
    """

    #: Dataset name used in messages.
    dataset_name = "class images"

    def __init__(self, image_size: tuple[int, int] | int, on_error: str, prompt_template: str) -> None:
        if prompt_template.count("{}") != 1:
            raise ValueError(
                f"prompt_template must contain exactly one '{{}}' for the class name: {prompt_template!r}"
            )
        self.image_size = check_image_size(image_size)
        self.on_error = check_on_error(on_error)
        self.prompt_template = prompt_template
        self.classnames: list[str] = []
        self.skipped: dict[str, int] = {}

    def _sample(self, sample_id: str, pixels: Tensor, label: int) -> Sample:
        """The sample of ``pixels`` (3 x H x W in [0, 1]), resized to ``image_size``, with its class prompt."""
        return Sample(id=sample_id, image=resize_center_crop(pixels, self.image_size),
                      prompt=self.prompt_template.format(self.classnames[label]), label=label, mask=None)
