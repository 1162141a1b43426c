"""Layer 8: trained models: load (ldlm.load), sample from the shell, save and share (hub, export, model card)."""
