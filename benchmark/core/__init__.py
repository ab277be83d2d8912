"""Core infrastructure, the lowest layer: registries and declarations, options, errors, atomic writes, the user
cache, progress, seeding, distributed context and the layer order itself (:mod:`aft_bench.core.layers`)."""
