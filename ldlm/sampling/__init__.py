"""Layer 5: samples from any model kind: keyed batches, rows with their settings."""
