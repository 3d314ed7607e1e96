"""The Zarr feature store: schema, safe concurrent writes, resume, and fast readers for training."""
