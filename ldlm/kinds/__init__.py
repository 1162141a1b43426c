"""Layer 4: the model kinds (LDLM, MDLM, GPT) behind one protocol, and how a run's model is built."""
