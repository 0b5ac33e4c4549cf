"""StreamBatches: augmented batches of server-side datasets, streamed to trainers."""
