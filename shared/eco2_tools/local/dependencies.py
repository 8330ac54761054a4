"""What `eco2 up` needs before it starts: Redis and RabbitMQ answering, or a message saying how to start them."""

from __future__ import annotations

from eco2.connections import amqp_connect, async_redis


class DependencyMissing(RuntimeError):
    """Redis or RabbitMQ is not reachable; the message says how to start it."""


async def check_dependencies(redis_url: str, amqp_url: str) -> None:
    """Both servers answer, or DependencyMissing saying how to start the one that does not."""
    client = async_redis(redis_url)
    try:
        await client.ping()
    except Exception:
        raise DependencyMissing(
            f"Redis is not reachable at {redis_url}. Start it with: "
            "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
        ) from None
    finally:
        await client.aclose()
    try:
        connection = await amqp_connect(amqp_url)
        await connection.close()
    except Exception:
        raise DependencyMissing(
            f"RabbitMQ is not reachable at {without_password(amqp_url)}. Start it with: "
            "rabbitmq-server -detached   (Debian: apt-get install rabbitmq-server)"
        ) from None


def without_password(url: str) -> str:
    """The URL as it may be shown: the password replaced by ***; each node of a cluster's list (eco2.amqp_cluster)."""
    if "," in url:
        return ",".join(without_password(part) for part in url.split(","))
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
