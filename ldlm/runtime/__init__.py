"""Layer 2: what every run stands on: devices and processes, precision, threads, checkpoints, run folders."""
