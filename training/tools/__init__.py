"""Dataset tools: class statistics (``dataset_stats``) and integrity checks (``check_dataset``)."""
