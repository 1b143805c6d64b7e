-- the pre-Delta lake's credit writer, the bench's baseline: every column (dataset and shard
-- too) to one Parquet file; dictionaries are off because node and parent ids are unique
-- strings (building and dropping a dictionary for them costs more than it saves)
copy credit_result to $path (format parquet, compression zstd, dictionary_size_limit 1)
