"""The question a VLM answers about each image (paper appendix A.4) and LLaVA-1.5's conversation around it.

Appendix A.4 asks LLaVA to pick the image's class from the ten Imagenette classes and to output only its name;
:func:`class_question` writes that question for any list of class names, in the given order, so the toy VLM is
asked the same question about the shapes world's classes. LLaVA-1.5 (Liu et al. 2023, "Improved baselines with
visual instruction tuning") wraps a question as ``USER: <image>\\n{question} ASSISTANT:``, the image placeholder
expanded by its processor into one token per patch.
"""

from __future__ import annotations

from collections.abc import Sequence

IMAGE_PLACEHOLDER = "<image>"
"""The text the LLaVA processor expands into the image's tokens."""


def class_question(classnames: Sequence[str]) -> str:
    """Appendix A.4's question for ``classnames``: pick one of them and output only its name.

    Raises:
        ValueError: If ``classnames`` is empty or holds an empty or repeated name.
    """
    names = [str(name).strip() for name in classnames]
    if not names or any(not name for name in names):
        raise ValueError(f"class_question: the class names {list(classnames)!r} must be non-empty strings")
    if len(set(names)) != len(names):
        raise ValueError(f"class_question: the class names {names!r} repeat a name; each must be listed once")
    return f"Please select one class from {', '.join(names)} to describe the image. Only output the class name."


def llava_conversation(question: str) -> str:
    """LLaVA-1.5's single-turn prompt around ``question``, the image first; the answer follows ``ASSISTANT:``."""
    return f"USER: {IMAGE_PLACEHOLDER}\n{question} ASSISTANT:"
