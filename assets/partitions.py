"""One dynamic partition per existing (dataset, shard), e.g. ``gsm8k.train.0003``."""

import dagster as dg

shard_partitions = dg.DynamicPartitionsDefinition(name="shards")
