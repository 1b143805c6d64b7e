-- table credit (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view credit as
select * from read_parquet(
    getvariable('lake_root') || '/credit/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
