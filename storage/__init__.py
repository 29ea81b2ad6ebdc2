"""Storage: the document schema, Parquet shards, the run manifest and DuckDB views over them."""
