"""Content fingerprints that chain down the tree, so a stale subtree can be told from data.

Ids are tree paths (``q/g0/v1/r2``): regenerating critiques writes the same ids with new
texts, and nothing in the ids says that the refinements below them were written for the old
texts. Every row therefore carries its own fingerprint (a hash of its parent's fingerprint
and its own content) and the parent's fingerprint as it was when the row was generated; a
child whose ``parent_fingerprint`` differs from its parent's current ``fingerprint`` hangs
under a parent that changed underneath it (``sql/checks/lineage.sql``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import pyarrow as pa

FINGERPRINT_CHARS = 16


def fingerprint(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts (None and lists included)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:FINGERPRINT_CHARS]


def question_fingerprint(question: str, choices: list[dict] | None, answer: str) -> str:
    return fingerprint("question", question, choices, answer)


def node_fingerprint(parent_fingerprint: str, text: str | None, error: str | None) -> str:
    return fingerprint(parent_fingerprint, text, error)


def table_version(fingerprints: Iterable[str | None]) -> str:
    """A data version for a whole partition: changes when any row's content changes."""
    digest = hashlib.sha256()
    for value in sorted(f or "" for f in fingerprints):
        digest.update(value.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def data_version_of(table: pa.Table, *columns: str) -> str:
    """The version of a partition: its rows' fingerprints, and for derived tables (rewards)
    the ``columns`` computed from them, so a changed checker changes the version too."""
    rows = zip(*(table.column(c).to_pylist() for c in ("fingerprint", *columns)), strict=True)
    return table_version("|".join(map(str, row)) for row in rows)
