"""Layer 0: the networks and the diffusion math (torch only): blocks, schedules, samplers, per-sample noise."""
