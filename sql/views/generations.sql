-- table generations (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view generations as
select * from read_parquet(
    getvariable('lake_root') || '/generations/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
