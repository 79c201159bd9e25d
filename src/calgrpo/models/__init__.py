"""Policy models: loading from hub/local/s3, and tiny models built from a config."""
