-- accuracy per (dataset, system, seed); one file per dataset
create or replace view eval_scores as
select * from read_parquet(
    getvariable('lake_root') || '/eval_scores/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
