"""ldlm: a reproducibility kit for Latent Diffusion Language Models trained jointly with their latent space.

`ldlm.load(path)` gives a trained model as a pipeline (ldlm.trained.api); it is imported on first use, so
`import ldlm` stays cheap (no torch).
"""
from .version import __version__

__all__ = ["load", "ModelPipeline", "Unsupported", "__version__"]


def __getattr__(name: str):
    if name in ("load", "ModelPipeline", "Unsupported"):
        from .trained import api

        return getattr(api, name)
    raise AttributeError(f"module 'ldlm' has no attribute {name!r}")
