"""Celery workers: load state from Redis, run PyTorch, write results back."""
