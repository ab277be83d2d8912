"""``aft-bench compare``: encoders compared on a suite of tasks, a scorecard and paired differences with significance.

One concept per module: :mod:`~aft_bench.apps.compare.arguments` (the command line), :mod:`~.plan` (the suite resolved
into run configurations), :mod:`~.stages` (running them through the runner, reusing earlier compares' stages),
:mod:`~.scorecard` (encoders x headline metrics), :mod:`~.pairing` (per-sample scores paired by sample id),
:mod:`~.differences` (the paired tests, bootstrap intervals and Holm's correction), :mod:`~.render` (Markdown, CSV,
JSON), :mod:`~.figure` (the PNG) and :mod:`~.compare` (all of it, as one function).
"""
