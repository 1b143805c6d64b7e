-- table sft_generator (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view sft_generator as
select * from read_parquet(
    getvariable('lake_root') || '/sft_generator/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
