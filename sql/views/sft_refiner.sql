-- table sft_refiner (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view sft_refiner as
select * from read_parquet(
    getvariable('lake_root') || '/sft_refiner/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
