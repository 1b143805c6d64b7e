"""Dagster definitions for malt-lake: thin assets over the ``malt_lake`` library."""
