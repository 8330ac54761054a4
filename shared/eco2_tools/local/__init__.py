"""Local runtime: the whole pack on one machine over real RabbitMQ, driven by the Knative manifests."""
