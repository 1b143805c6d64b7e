-- one row per (dataset, shard) partition the configured datasets have
create or replace view shards as
select * from read_parquet(
    getvariable('lake_root') || '/shards/data.parquet',
    hive_partitioning = false
)
