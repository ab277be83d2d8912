"""Encoder backends: one :class:`~aft_bench.encoder.Encoder` subclass per library, registered in
``aft_bench.registries.ENCODER_BACKENDS`` (open_clip, transformers, timm, toy) and reached by spec through
:func:`aft_bench.loading.load_encoder`."""
