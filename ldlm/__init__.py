"""ldlm: a reproducibility kit for Latent Diffusion Language Models trained jointly with their latent space."""
__version__ = "0.1.0"
