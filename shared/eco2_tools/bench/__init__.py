"""`eco2 bench`: the pack and the Celery baseline (the same handlers) side by side, in one run."""
