-- one prediction per (eval_id, seed, system, question); one file per dataset
create or replace view eval_predictions as
select * from read_parquet(
    getvariable('lake_root') || '/eval_predictions/*/data.parquet',
    hive_partitioning = false,
    union_by_name = true
)
