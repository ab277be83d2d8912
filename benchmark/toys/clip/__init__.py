"""The bundled toy CLIP: a tiny open_clip ViT trained contrastively on the shapes world.

aft-bench's embedded default needs a CLIP that exists without downloads. This module trains one with
the objective of CLIP (Radford et al. 2021, "Learning transferable visual models from natural language
supervision"): a symmetric InfoNCE loss between image and caption embeddings with a learnable logit
scale, AdamW and a cosine schedule with linear warm-up. The architecture is open_clip's own ``CLIP``
(a ViT image tower with an 8 x 8 patch grid, so saliency maps have spatial structure, and a causal
text transformer over open_clip's bundled BPE tokenizer), so every code path the real encoders take
(loading, Grad-CAM on blocks, attention) serves the toy unchanged.

Duplicate captions: the world has few captions, so the loss merges identical ones
(:mod:`aft_bench.toys.clip.loss`).

Training in about a minute and a half on two CPU cores. ViTs trained from scratch on little data
learn slowly; two published remedies that keep the architecture a plain ViT make the difference here:
the fixed 2-D sine-cosine position embedding and the mimetic initialisation of attention (Trockman &
Kolter 2023), which together start the attention local. The training images are rendered once into
a uint8 pool (rendering is as costly as a training step), the token table gets sparse updates, and
training runs on a fixed number of threads (:data:`aft_bench.toys.clip.fit.TRAINING_THREADS`), so the weights
are the same on every machine, busy or idle.

The trained encoder is cached in the user cache directory (:mod:`aft_bench.core.cache`) under the hash of
its :class:`ToyRecipe` and a fingerprint of the world, so a change to either retrains;
:func:`load_toy_encoder` is the ``toy`` entry of the encoder registry.
"""
