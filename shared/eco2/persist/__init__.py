"""Rewards that last: the persist function's store (PostgreSQL or SQLite), migrations, and group commit."""
