"""The paper's suites: one YAML file per table or figure of the AFT paper (see :mod:`aft_bench.apps.paper.spec`)."""
