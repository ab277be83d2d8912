"""Suites: task runs and their headline metrics as data (YAML), shared by ``aft-bench compare`` and reports.

The built-in suites are the YAML files beside this module (``interpretability``, ``robustness``, ``quick``); a
user's own suite is any file in the same schema, given by path. See :mod:`aft_bench.suites.suite`.
"""

from __future__ import annotations

from aft_bench.suites.suite import (
    DATASET_KEYS,
    SCHEMA_VERSION,
    DatasetSettings,
    Suite,
    SuiteDefaults,
    SuiteInfo,
    SuiteTask,
    UnknownSuiteKeyError,
    headline_metrics,
    is_suite_path,
    load_suite,
    parse_suite,
    suite_names,
)

__all__ = ["DATASET_KEYS", "SCHEMA_VERSION", "DatasetSettings", "Suite", "SuiteDefaults", "SuiteInfo", "SuiteTask",
           "UnknownSuiteKeyError", "headline_metrics", "is_suite_path", "load_suite", "parse_suite", "suite_names"]
