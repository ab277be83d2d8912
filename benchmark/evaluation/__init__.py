"""Evaluation: the task contract and its per-sample loop, the run configuration and context, streaming, linear
probes, targets, classifier heads, attacks and the shared pieces of task families (removal)."""
