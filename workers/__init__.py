"""Celery: the app, its settings, thin tasks and signals. The real work is in `core`."""
