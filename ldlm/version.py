"""The kit's version: saved models record it (ldlm.trained.hub); `ldlm.__version__` shows it."""
__version__ = "0.1.0"
