"""The request language: networks, layers, losses, optimizers and jobs as pydantic specs (no torch here)."""
