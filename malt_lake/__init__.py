"""malt-lake: MALT multi-agent training data as a lakehouse. The library; no Dagster here."""

__version__ = "0.1.0"
