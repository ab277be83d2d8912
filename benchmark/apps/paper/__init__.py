"""``aft-bench paper``: the AFT paper's tables and figures laid out as the paper does, with its published numbers
beside ours. Each item is one suite file in ``suites/`` (a compare suite with a ``paper`` section, read by
:mod:`~aft_bench.apps.paper.spec`); the paper's numbers are package data in ``references/`` (read by
:mod:`~aft_bench.apps.paper.references`); :mod:`~aft_bench.apps.paper.report` measures, renders and writes the report.
"""
