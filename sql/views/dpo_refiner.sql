-- table dpo_refiner (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view dpo_refiner as
select * from read_parquet(
    getvariable('lake_root') || '/dpo_refiner/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
