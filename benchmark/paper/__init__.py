"""The AFT paper's published numbers, as package data, for reports that print them beside measured values.

One YAML file per numeric table of the paper (``references/table1.yaml`` ... ``table11.yaml``): the paper's
protocol, every number the text extraction gives (keyed by the project's metric, method, target and encoder
names) and, for what it does not give, the reason. See :mod:`aft_bench.paper.references`.
"""

from __future__ import annotations

from aft_bench.paper.references import (
    COLUMN_KINDS,
    ENCODER_ROLES,
    PAPER_ONLY_METHODS,
    ROW_KEYS,
    SCHEMA_VERSION,
    Column,
    Missing,
    Protocol,
    ReferenceCell,
    ReferenceTable,
    UnknownReferenceKeyError,
    load_reference,
    parse_reference,
    reference_ids,
)

__all__ = ["COLUMN_KINDS", "ENCODER_ROLES", "PAPER_ONLY_METHODS", "ROW_KEYS", "SCHEMA_VERSION", "Column", "Missing",
           "Protocol", "ReferenceCell", "ReferenceTable", "UnknownReferenceKeyError", "load_reference",
           "parse_reference", "reference_ids"]
