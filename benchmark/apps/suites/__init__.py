"""Suites: task runs and their headline metrics as data (YAML), shared by ``aft-bench compare`` and reports.

The built-in suites are the YAML files beside this module (``interpretability``, ``robustness``, ``quick``); a
user's own suite is any file in the same schema, given by path. See :mod:`aft_bench.apps.suites.suite`.
"""
