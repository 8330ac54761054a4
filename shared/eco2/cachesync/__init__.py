"""Cache-sync: the token blacklist and the character catalog, kept current in every process from fanout exchanges.

`events` (the two event types and their data), `store` (Redis, the durable truth), `caches` (the in-process
copies and the one handler that applies an event to them), `replica` (the pika consumer thread that feeds them,
with warm-up from Redis and reconnects), `publish` (putting an event on a fanout exchange).
"""
