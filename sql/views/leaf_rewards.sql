-- table leaf_rewards (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view leaf_rewards as
select * from read_parquet(
    getvariable('lake_root') || '/leaf_rewards/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
