"""Layer 3: text in: datasets by name, token blocks, and the frozen LM whose states LDLM encodes."""
