"""The PyTorch side of a spec: building modules, shape checks, losses/optimizers, graph dumps, state codec."""
