"""Layer 9: the experiment spec and the pipeline the notebooks run."""
