-- table dpo_verifier (grain and columns: warehouse/README.md); partitioned by dataset, shard
create or replace view dpo_verifier as
select * from read_parquet(
    getvariable('lake_root') || '/dpo_verifier/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
