"""Models: the :class:`~aft_bench.models.encoder.Encoder` contract, its backends (open_clip, transformers, timm,
named encoders), the one encoder factory (:mod:`aft_bench.models.loading`), checkpoints and hub access, the explicit
attention path, activations and weight re-initialisation, and the LLaVA vision-language models."""
