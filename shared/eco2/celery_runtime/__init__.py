"""The seed's runtime as a worker mode: the pack's stage handlers as a Celery chain (`eco2 worker --celery`)."""
