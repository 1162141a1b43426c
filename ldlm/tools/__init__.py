"""Layer 10: command-line tools: speed benchmark, GPU check and job, data preparation, parameter counts, demo."""
