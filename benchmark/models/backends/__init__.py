"""Encoder backends: one :class:`~aft_bench.models.encoder.Encoder` subclass (or spec reader) per library, declared
in ``ENCODER_BACKENDS`` and reached by spec through :func:`aft_bench.models.loading.load_encoder`."""
