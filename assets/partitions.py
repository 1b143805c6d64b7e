"""Dynamic partitions: one per existing (dataset, shard), e.g. ``gsm8k.train.0003``, and one
per configured dataset (evaluation runs per dataset)."""

import dagster as dg

shard_partitions = dg.DynamicPartitionsDefinition(name="shards")
dataset_partitions = dg.DynamicPartitionsDefinition(name="datasets")
