"""The embedded world's models, trained by the project on first use and cached: the toy CLIP and its fine-tunes,
the toy VLM and the control encoders.

The two toys the project trains from scratch share one recipe base (:mod:`aft_bench.toys.recipe`: JSON-ready data,
key and cache key), one step loop (:mod:`aft_bench.toys.fit`) and one cache store (:mod:`aft_bench.toys.store`)."""
