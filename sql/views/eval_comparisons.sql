-- paired differences between systems with bootstrap intervals; one file per dataset
create or replace view eval_comparisons as
select * from read_parquet(
    getvariable('lake_root') || '/eval_comparisons/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
