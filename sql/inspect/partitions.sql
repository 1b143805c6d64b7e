-- The shard partitions of one dataset ($dataset) in the lake's catalog (the project as
-- configured when the catalog was last materialized), in order; with every dataset's name,
-- so a caller can list the configured ones when $dataset has none.
select partition_key, dataset
from shards
where dataset = $dataset or $dataset is null
order by partition_key
