"""The positive control: a ViT CLIP whose image embedding depends only on the pixels inside each sample's mask.

Issue 15's control for the methods and metrics: if an attribution method is right, it must point inside the
object on an encoder that sees nothing else, so every gradient and attention method should score a pointing game
near 100% on it (and a method that does not has a defect). The encoder (``control-mask``) is the toy CLIP's
architecture with random, seeded weights, made blind outside the mask by construction:

* the mask of each input comes from :class:`~aft_bench.toys.controls.mask_oracle.MaskOracle` (the shapes sample the
  image is);
* pixels outside the mask are set to the normalisation mean (0 in the model's input space), so the gradient of
  the embedding with respect to them is exactly zero;
* a patch token is kept when all its pixels are in the mask (at least one patch per image: those with the
  largest share), so that a patch-resolution map's peak (at a kept patch's centre) lies inside the mask; the
  other patch tokens are zeroed after the embedding and after every block, and with every bias of the tower's
  layer norms, attention and MLP set to zero a zero token stays zero (its layer norm, query, key and value are
  zero);
* in every block a kept token (and the class token) attends to the kept tokens only, and a dropped token to
  itself only (an additive ``-inf`` mask), so no dropped token reaches the class token by any path (attention
  maps, Rollout and Grad-ECLIP see zero there; Grad-CAM sees zero activations there).

Measured on the 200 default shapes test images (``aft-bench run --task pointing_game --encoders control-mask``):
PG 100% for Simple Gradient, SmoothGrad, attention maps, Rollout and M2IB, 95.5% for Grad-CAM, 40.5% for
Grad-ECLIP, against 18.2% by chance. Grad-ECLIP's per-block ReLU of gradient-weighted values gives an all-zero map
on about half of the images of this random-weight model (no kept token has positive evidence); a constant map
points at its first pixel, a miss by the pointing game's rule, and every Grad-ECLIP map that is not constant points
inside the mask (tests/test_controls.py). M2IB's PG-energy is at chance (19.5%) although its peak is always inside:
its bottleneck leaves the dropped tokens, which carry no information either way, near their initial weight.

The construction is this project's own; it is not from the AFT paper. The encoder cannot be saved (it is rebuilt
by name) because a reloaded state dict would lose the gating.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import Tensor, nn

from aft_bench.core.registries import ENCODERS
from aft_bench.models.attention import additive_mask
from aft_bench.models.backends.open_clip import OpenClipEncoder
from aft_bench.models.backends.open_clip_models import build_model, tokenizer_for
from aft_bench.models.encoder import UnsupportedEncoderError
from aft_bench.toys.clip.recipe import DEFAULT_RECIPE
from aft_bench.toys.controls.mask_oracle import MaskOracle, ShapesWorld

CONTROL_NAME = "control-mask"
KEEP_SHARE = 1.0
"""A patch token is kept when at least this share of its pixels is in the mask."""
SEED = 0


class TokenGate:
    """The kept tokens (B x N bool, class token first) of the batch the tower last embedded."""

    def __init__(self) -> None:
        self.keep: Tensor | None = None

    def tokens_for(self, batch: int) -> Tensor:
        """The kept tokens for a batch of ``batch`` sequences: the embedded batch's, each repeated ``batch / B``
        times when a caller runs the blocks on several copies of every image (M2IB's noise samples, image-major).

        Raises:
            RuntimeError: Before any embedding, or for a batch that is not a multiple of the embedded one.
        """
        if self.keep is None or batch % self.keep.shape[0]:
            have = None if self.keep is None else self.keep.shape[0]
            raise RuntimeError(f"{CONTROL_NAME}: blocks run on {batch} sequences, but the tower last embedded {have} "
                               "images; run the blocks after a forward of the tower on the same images")
        return self.keep.repeat_interleave(batch // self.keep.shape[0], dim=0)


class MaskGatedBlock(ResidualAttentionBlock):
    """A ResidualAttentionBlock that attends among kept tokens only and zeroes the dropped ones' outputs."""

    gate: TokenGate

    def forward(self, q_x: Tensor, k_x: Tensor | None = None, v_x: Tensor | None = None,
                attn_mask: Tensor | None = None) -> Tensor:
        if k_x is not None or v_x is not None or attn_mask is not None:
            raise UnsupportedEncoderError(f"{CONTROL_NAME}: its blocks run self-attention under their own mask only")
        keep = self.gate.tokens_for(q_x.shape[0])
        tokens = keep.shape[1]
        itself = torch.eye(tokens, dtype=torch.bool, device=keep.device)
        blocked = ~(keep[:, None, :] | itself)  # B x N x N: query i may attend to key j
        mask = additive_mask(blocked.repeat_interleave(self.attn.num_heads, dim=0), q_x.dtype)
        return super().forward(q_x, attn_mask=mask) * keep[..., None].to(q_x.dtype)


class MaskGatedVisionTransformer(VisionTransformer):
    """open_clip's VisionTransformer that looks up each image's mask and sees only what lies inside it."""

    oracle: MaskOracle
    gate: TokenGate

    def kept_tokens(self, masks: Tensor) -> Tensor:
        """B x (1 + gh*gw) kept tokens from B x H x W masks: the class token and the patches at least
        :data:`KEEP_SHARE` inside the mask (the largest share where none is)."""
        patch = self.conv1.kernel_size[0]
        share = F.avg_pool2d(masks[:, None].float(), patch).flatten(1)
        keep = share >= KEEP_SHARE
        keep |= share == share.amax(dim=1, keepdim=True)
        return torch.cat([torch.ones_like(keep[:, :1]), keep], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        pixels = x * self.pixel_std + self.pixel_mean
        masks = self.oracle.masks_of(pixels)
        keep = self.kept_tokens(masks)
        self.gate.keep = keep
        tokens = self._embeds(x * masks[:, None].to(x.dtype)) * keep[..., None].to(x.dtype)
        pooled, _ = self._pool(self.transformer(tokens))
        return pooled @ self.proj if self.proj is not None else pooled


class MaskGatedEncoder(OpenClipEncoder):
    """The ``control-mask`` encoder (see the module docstring); rebuilt by name, never saved."""

    def save(self, path: object, card: object) -> object:
        raise UnsupportedEncoderError(f"{CONTROL_NAME} is a hand-built control rebuilt by name; it cannot be saved "
                                      "(its weights alone would lose the mask gating)")


@torch.no_grad()
def _zero_biases(visual: nn.Module) -> None:
    for name, parameter in visual.named_parameters():
        if name.endswith("bias") and not name.startswith("ln_post"):
            parameter.zero_()


@ENCODERS.register("control-mask",
                   help="positive control: a random ViT that sees only the pixels inside each shapes sample's mask")
def load_mask_control(device: str | torch.device = "cpu") -> MaskGatedEncoder:
    """The ``control-mask`` encoder: the toy CLIP's architecture with seeded random weights, blind outside each
    shapes sample's mask (the first 1000 test images at 64 px)."""
    recipe = DEFAULT_RECIPE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = build_model(recipe.model_cfg())
    visual = model.visual
    _zero_biases(visual)
    gate = TokenGate()
    visual.__class__ = MaskGatedVisionTransformer  # same modules and weights, gated forward
    visual.oracle = MaskOracle(ShapesWorld(image_size=recipe.image_size))
    visual.gate = gate
    visual.register_buffer("pixel_mean", torch.tensor(recipe.mean).view(1, 3, 1, 1), persistent=False)
    visual.register_buffer("pixel_std", torch.tensor(recipe.std).view(1, 3, 1, 1), persistent=False)
    for block in visual.transformer.resblocks:
        block.__class__ = MaskGatedBlock
        block.gate = gate
    card = {"name": CONTROL_NAME, "model_cfg": recipe.model_cfg(), "seed": SEED,
            "control": "embedding depends only on the pixels inside each shapes sample's mask (aft_bench.controls)"}
    encoder = MaskGatedEncoder(model, tokenizer_for(recipe.model_cfg()), CONTROL_NAME, recipe.mean, recipe.std, card)
    return encoder.to(device)
