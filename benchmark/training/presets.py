"""Named recipes: the paper's runs (Table 2 / Table 9) and the toy encoders of the embedded default.

Pure data (no torch, no trainer): ``aft-bench train --preset NAME`` starts from ``PRESETS[NAME]``, and
:mod:`aft_bench.toys.clip.finetunes` trains the toy presets on first use.

Paper runs (appendix A.3): ImageNet train set at 224 x 224, 2 epochs, PGD 10 steps of 1/255, AdamW
(0.9, 0.95), weight decay 1e-4, peak lr 1e-5 with warm-up and cosine decay, batch 128 (64 for
ViT-L-14), sigma = eta = 1/255. ``--data`` must point at the ImageNet train folder. Names:
``{arch}-aft-eps{1,2,4}`` for ViT-B-16, RN50, ViT-L-14 and ``vit-b-16-fare-eps{1,2,4}``.

Toy runs (``toy-aft``, ``toy-fare``, ``toy-tecoa``, ``toy-pmg-aft``, and ``toy-shortcut-aft`` / ``toy-shortcut-fare``
from the ``toy-shortcut`` CLIP of the planted-shortcut world): fine-tune the bundled toy CLIP on the
shapes world in about a minute on two CPU cores (TeCoA and PMG-AFT on its class labels; the planted-shortcut
fine-tunes train three times as long); the encoders of the same names train them on first use.
"""

from __future__ import annotations

from typing import Any

from aft_bench.data.shortcut import SHORTCUT_AMPLITUDE

_PAPER_COMMON: dict[str, Any] = {
    "data": "imagenet-train",  # placeholder: refused with a message until --data /path/to/imagenet/train
    "epochs": 2.0, "lr": 1e-5, "weight_decay": 1e-4, "beta1": 0.9, "beta2": 0.95,
    "pgd_steps": 10, "pgd_step_size": 1.0, "eta": 1.0, "sigma": 1.0,
}
_ROBUSTVLM: dict[str, Any] = {
    # The published TeCoA^eps and FARE^eps ViT-L-14 checkpoints (Schlarmann et al. 2024, the RobustVLM README's
    # training commands): ImageNet, 20000 steps of batch 128 (2 epochs), 1400 warm-up steps then cosine decay to 0,
    # AdamW with torch's default betas, lr 1e-5, weight decay 1e-4, PGD 10 steps of 1/255 from a uniform start,
    # no smoothing noise or penalty. TeCoA's head is "This is a photo of a {}" at the model's logit scale (100 for
    # OpenAI's; the code fixes 100), over CLIP's ImageNet class names (the code uses OpenFlamingo's list).
    "encoder": "ViT-L-14:openai", "data": "imagenet-train", "max_steps": 20000, "warmup": 1400 / 20000,
    "batch_size": 128, "lr": 1e-5, "weight_decay": 1e-4, "beta1": 0.9, "beta2": 0.999, "pgd_steps": 10,
    "pgd_step_size": 1.0, "sigma": 0.0, "eta": 0.0,
}
_ARCHS: dict[str, tuple[str, int]] = {"vit-b-16": ("ViT-B-16:openai", 128), "rn50": ("RN50:openai", 128),
                                      "vit-l-14": ("ViT-L-14:openai", 64)}


def _paper_presets() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for short, (spec, batch) in _ARCHS.items():
        for eps in (1, 2, 4):
            out[f"{short}-aft-eps{eps}"] = {**_PAPER_COMMON, "encoder": spec, "batch_size": batch,
                                            "objective": "aft", "eps": float(eps)}
    for eps in (1, 2, 4):
        out[f"vit-b-16-fare-eps{eps}"] = {**_PAPER_COMMON, "encoder": "ViT-B-16:openai", "batch_size": 128,
                                          "objective": "fare", "eps": float(eps), "sigma": 0.0, "eta": 0.0}
    for eps in (2, 4):
        out[f"vit-l-14-tecoa-eps{eps}"] = {**_ROBUSTVLM, "objective": "tecoa", "templates": "this_is_a_photo",
                                           "eps": float(eps)}
        out[f"vit-l-14-fare-eps{eps}"] = {**_ROBUSTVLM, "objective": "fare", "eps": float(eps)}
    return out


_TOY_COMMON: dict[str, Any] = {
    # The paper's eps, eta, sigma and PGD (10 steps of 1/255) and its optimiser, with a 10x learning
    # rate so that 150 steps of batch 32 on 64 x 64 images finish in about a minute on two CPU cores.
    "encoder": "toy", "data": "shapes:4096", "batch_size": 32, "max_steps": 150, "lr": 1e-4,
    "warmup": 0.1, "weight_decay": 1e-4, "pgd_steps": 10, "pgd_step_size": 1.0, "eps": 4.0,
    "save_every": 50, "seed": 0,
    # A fixed thread count (the toy CLIP's): the weights then do not depend on the machine's core count or load.
    "threads": 2,
}
_SHORTCUT_DATA = f"shapes:4096,shortcut={SHORTCUT_AMPLITUDE:g}"
_SHORTCUT_STEPS = 450
PRESETS: dict[str, dict[str, Any]] = {
    **_paper_presets(),
    "toy-aft": {**_TOY_COMMON, "objective": "aft", "eta": 1.0, "sigma": 1.0},
    "toy-fare": {**_TOY_COMMON, "objective": "fare", "eta": 0.0, "sigma": 0.0},
    # TeCoA / PMG-AFT on the shapes world's classes, same budget (no penalty or noise, as in those papers).
    "toy-tecoa": {**_TOY_COMMON, "objective": "tecoa", "eta": 0.0, "sigma": 0.0},
    "toy-pmg-aft": {**_TOY_COMMON, "objective": "pmg-aft", "eta": 0.0, "sigma": 0.0},
    # The planted-shortcut world (aft_bench.data.shortcut): the same fine-tunes of the toy-shortcut CLIP, on images
    # that carry the pattern, three times as long: that CLIP's object features are weak (it reads the pattern), and
    # after 150 steps AFT still follows a swapped pattern on 7.5% of the images and points at the object on 16%,
    # after 450 on 1.5% and 45% (README, "The planted-shortcut world").
    "toy-shortcut-aft": {**_TOY_COMMON, "encoder": "toy-shortcut", "data": _SHORTCUT_DATA, "objective": "aft",
                         "eta": 1.0, "sigma": 1.0, "max_steps": _SHORTCUT_STEPS},
    "toy-shortcut-fare": {**_TOY_COMMON, "encoder": "toy-shortcut", "data": _SHORTCUT_DATA, "objective": "fare",
                          "eta": 0.0, "sigma": 0.0, "max_steps": _SHORTCUT_STEPS},
}
