"""Data audit: catch the data problems that sink adaptations before the ladder spends compute.

Most failed adaptations fail on the data: too few examples, duplicates that leak the test set
into training (a false score), labels that contradict each other. :func:`run_audit` checks a
loaded :class:`~adaptladder.task.Task` for

* size against an editable requirements table (``data/requirements.yaml``) and which ladder
  families the training split can support (``supported_families``);
* class balance;
* exact duplicates (after case / whitespace / punctuation normalisation) and near-duplicates
  (cosine similarity of cached sentence embeddings, blockwise matrix products);
* train -> validation / test leakage, exact and near;
* conflicting labels on the same normalised text;
* likely label errors (cleanlab on out-of-fold probabilities);
* text hygiene (empty, very short / long, URL-only, symbol noise, encoding garbage).

Every finding has a severity; an *error* stops ``adaptladder run`` unless ``--force``
(:func:`enforce_audit`). :func:`audit_source` audits files *before* loading them strictly, so a
dirty file gets one full report instead of one loading error at a time, and
:func:`write_clean_splits` writes de-duplicated, leak-free splits as new files.

The package is split by job: ``requirements`` (the rules table), ``report`` (findings and the
report object), ``lenient`` (auditing files strict loading refuses), ``context`` + ``sizes`` /
``duplicates`` / ``labels`` / ``hygiene`` (the checks), ``engine`` (:func:`run_audit`),
``clean`` (clean splits) and ``gate`` (the ladder's audit step).
"""

from __future__ import annotations

from adaptladder.audit.clean import clean_split_plan, write_clean_splits
from adaptladder.audit.context import SupportsEncode
from adaptladder.audit.duplicates import near_duplicate_pairs
from adaptladder.audit.engine import run_audit
from adaptladder.audit.gate import audit_for_run, enforce_audit, is_current
from adaptladder.audit.labels import out_of_fold_probs
from adaptladder.audit.lenient import audit_source
from adaptladder.audit.report import AuditReport, Finding
from adaptladder.audit.requirements import (
    FAMILY_ORDER,
    FAMILY_WORDS,
    RULES_VERSION,
    SCHEMA_VERSION,
    SEVERITIES,
    TASK_TYPES,
    load_requirements,
)
from adaptladder.audit.text import token_lengths
from adaptladder.task import normalize_text

__all__ = [
    "FAMILY_ORDER",
    "FAMILY_WORDS",
    "RULES_VERSION",
    "SCHEMA_VERSION",
    "SEVERITIES",
    "TASK_TYPES",
    "AuditReport",
    "Finding",
    "SupportsEncode",
    "audit_for_run",
    "audit_source",
    "clean_split_plan",
    "enforce_audit",
    "is_current",
    "load_requirements",
    "near_duplicate_pairs",
    "normalize_text",
    "out_of_fold_probs",
    "run_audit",
    "token_lengths",
    "write_clean_splits",
]
