"""What every LLM stage shares: a latent's example table, the lazy request stream, and
resumable Parquet output. Written once; explainers and scorers only build and parse."""
