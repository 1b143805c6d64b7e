-- table dpo_generator (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view dpo_generator as
select * from read_parquet(
    getvariable('lake_root') || '/dpo_generator/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
