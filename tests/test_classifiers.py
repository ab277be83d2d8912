"""The zero-shot head: one prompt, CLIP's prompt ensembles, the logit scale, and bad options."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from aft_bench.core.options import parse_options
from aft_bench.evaluation.classifiers import TEMPLATE_SETS, PromptOptions, ZeroShotClassifier, prompt_templates

NAMES = ["cat", "dog", "bird"]


def _config(**options: object) -> PromptOptions:
    return parse_options(PromptOptions, options, "test")


def _dataset(template: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(classnames=NAMES, **({"prompt_template": template} if template else {}))


def test_one_template_is_the_plain_prompt(tiny_vit) -> None:
    head = ZeroShotClassifier(tiny_vit, _dataset("a drawing of a {}."), _config())
    expected = tiny_vit.encode_text([f"a drawing of a {n}." for n in NAMES])
    torch.testing.assert_close(head.text, expected)
    head = ZeroShotClassifier(tiny_vit, _dataset("a drawing of a {}."), _config(prompt_template="a {}."))
    torch.testing.assert_close(head.text, tiny_vit.encode_text([f"a {n}." for n in NAMES]))  # the option wins


def test_several_templates_are_clips_ensemble(tiny_vit) -> None:
    head = ZeroShotClassifier(tiny_vit, _dataset(), _config(templates=["a photo of a {}.", "art of the {}."]))
    first = tiny_vit.encode_text([f"a photo of a {n}." for n in NAMES])
    second = tiny_vit.encode_text([f"art of the {n}." for n in NAMES])
    torch.testing.assert_close(head.text, F.normalize(first + second, dim=-1))
    assert not torch.allclose(head.text, first, atol=1e-3)  # the ensemble is not one of its prompts


def test_named_sets_come_from_open_clip(tiny_vit) -> None:
    makers = prompt_templates(_config(templates="openai_imagenet"), _dataset())
    assert len(makers) == 80 and makers[0]("dog") == OPENAI_IMAGENET_TEMPLATES[0]("dog")
    assert len(TEMPLATE_SETS["simple_imagenet"]) == 7
    head = ZeroShotClassifier(tiny_vit, _dataset(), _config(templates="simple_imagenet"))
    each = torch.stack([tiny_vit.encode_text([t(n) for n in NAMES]) for t in TEMPLATE_SETS["simple_imagenet"]])
    torch.testing.assert_close(head.text, F.normalize(each.mean(dim=0), dim=-1))


def test_logits_use_the_models_scale(tiny_vit) -> None:
    head = ZeroShotClassifier(tiny_vit, _dataset(), _config())
    images = torch.rand(2, 3, *tiny_vit.image_size)
    with torch.no_grad():
        expected = tiny_vit.model.logit_scale.exp() * tiny_vit(images) @ head.text.T
        torch.testing.assert_close(head.logits(images), expected)


@pytest.mark.parametrize(("options", "message"), [
    ({"templates": "laion_everything"}, "templates='laion_everything'"),
    ({"templates": ["a photo.", "a {}."]}, "exactly one"),
    ({"prompt_template": "a {} {}."}, "exactly one"),
])
def test_bad_template_options_are_named(tiny_vit, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ZeroShotClassifier(tiny_vit, _dataset(), _config(**options))
