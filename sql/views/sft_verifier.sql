-- table sft_verifier (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view sft_verifier as
select * from read_parquet(
    getvariable('lake_root') || '/sft_verifier/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
