-- table generation_rewards (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view generation_rewards as
select * from read_parquet(
    getvariable('lake_root') || '/generation_rewards/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
