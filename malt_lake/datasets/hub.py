"""Hugging Face hub datasets, only when the user has network."""

from __future__ import annotations

import os
from collections.abc import Iterator

from malt_lake.datasets.readers import RawRow
from malt_lake.errors import HubUnavailable
from malt_lake.settings import HubSource


def hub_rows(source: HubSource) -> Iterator[RawRow]:
    hint = (f"download {source.name} where you have network, save the split as JSONL or "
            "Parquet, and point a `kind = \"file\"` split at it")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise HubUnavailable(f"hub dataset {source.name!r} requested but HF_HUB_OFFLINE=1; {hint}")
    import datasets  # heavy; only on this path

    try:
        loaded = datasets.load_dataset(source.name, source.config, split=source.split)
    except Exception as exc:  # network, auth and missing-dataset errors all land here
        raise HubUnavailable(
            f"could not load hub dataset {source.name!r} ({type(exc).__name__}: {exc}); {hint}"
        ) from exc
    for index, row in enumerate(loaded, start=1):
        yield RawRow(index, dict(row))
