"""Dataset ingestion: read raw formats, normalise to the problem schema, validate, publish."""
