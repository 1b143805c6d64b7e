-- write the credit relation (registered as credit_result) to the Parquet file the Delta commit
-- adds as it is: every column but the partition columns (dataset, shard: the commit records
-- their values); dictionaries are off because node and parent ids are unique strings
-- (building and dropping a dictionary for them costs more than it saves)
copy (select * exclude (dataset, shard) from credit_result) to $path
    (format parquet, compression zstd, dictionary_size_limit 1)
