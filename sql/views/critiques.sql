-- table critiques (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view critiques as
select * from read_parquet(
    getvariable('lake_root') || '/critiques/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
