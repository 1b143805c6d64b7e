-- one row per question; partitioned by dataset, shard
create or replace view questions as
select * from read_parquet(
    getvariable('lake_root') || '/questions/*/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
