"""Cache-sync: the token blacklist and the character catalog, kept current in every process from fanout exchanges.

`events` (the two event types and their data), `store` (Redis, the durable truth), `handler` (the in-process
copies and the one handler that applies an event to them), `replica` (the aio-pika consumer that feeds them,
with warm-up from Redis and reconnects), `blacklist` (the revocation check), `functions` (blacklist-sync,
catalog-sync), `authz` (Envoy ext_authz).
"""
