-- table refinements (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view refinements as
select * from read_parquet(
    getvariable('lake_root') || '/refinements/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
