"""Dataset formats users have (image folders, Parquet tables): checked at upload, decoded for a job."""
