"""A high-availability set on one machine for tests and the fault suite: Redis under Sentinel, a RabbitMQ cluster."""
