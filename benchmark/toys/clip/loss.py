"""CLIP's contrastive loss for a world with few captions: identical captions merged into one column.

The shapes world has ``len(CLASSNAMES)`` captions, so a batch of 64 images holds each caption several
times, and plain InfoNCE (Radford et al. 2021) would push an image away from the very caption that
describes it whenever a same-class image sits in another column. Here the image-to-text term is a
cross-entropy over the *distinct* captions of the batch (one column each), and the text-to-image term
gives every distinct caption a soft target spread uniformly over all images of its class. With one image
per caption this is exactly CLIP's loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def deduplicated_clip_loss(image_emb: Tensor, text_emb: Tensor, labels: Tensor, logit_scale: Tensor) -> Tensor:
    """CLIP's symmetric InfoNCE with identical captions merged into one column (see the module docstring).

    Args:
        image_emb: B x D unit-norm image embeddings.
        text_emb: K x D unit-norm embeddings of the K distinct captions of the batch.
        labels: B indices into the K captions (every one of the K must occur).
        logit_scale: Log of the inverse temperature (CLIP's learnable ``logit_scale``).

    Returns:
        The mean of the image-to-text cross-entropy and the text-to-image soft-target KL divergence.
    """
    logits = logit_scale.exp() * image_emb @ text_emb.T  # B x K
    image_to_text = F.cross_entropy(logits, labels)
    members = (labels[None, :] == torch.arange(text_emb.shape[0], device=labels.device)[:, None]).to(logits.dtype)
    targets = members / members.sum(dim=1, keepdim=True)  # K x B, uniform over the images of each caption
    # KL divergence from the soft target: its cross-entropy less its entropy log(n_k), so that a perfect
    # fit scores 0 (the gradient is the cross-entropy's).
    cross_entropy = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1)
    text_to_image = (cross_entropy - members.sum(dim=1).log()).mean()
    return (image_to_text + text_to_image) / 2
