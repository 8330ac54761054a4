"""The model stages' sharded Triggers: renders eventing/triggers-shards.yaml.

    python -m eco2_tools.manifests.shards > eventing/triggers-shards.yaml

A RabbitMQ broker Trigger's dispatcher holds at most 100 events in flight (its AMQP prefetch is fixed at 100),
and a model call waits seconds: 100 in flight is 100 / 7 s = 14 answers a second, whatever the replicas. Each
model stage therefore gets one normal-priority Trigger per shard (eco2.events.SHARDS), filtering on the event's
`shard` attribute as well as its type, so each shard has its own queue and dispatcher. The file is this
module's output, checked by tests/manifests: change SHARDS or a delivery here, render again, commit both.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from eco2.events import FUNCTION_EVENTS, SHARD_ATTRIBUTE, SHARDED_FUNCTIONS, SHARDS, EventType, Priority

# Per attempt, equal to the subscriber Service's revision timeoutSeconds (its model budget, the wait for model
# capacity and room to answer cleanly).
DELIVERY_TIMEOUT = {"vision": "PT300S", "answer": "PT360S"}
PARALLELISM = 100

HEADER = f"""\
# Rendered by `python -m eco2_tools.manifests.shards` (shared/eco2_tools/manifests/shards.py); do not edit by hand.
#
# The model stages' normal-priority Triggers, {SHARDS} per stage. The RabbitMQ broker's dispatcher holds at
# most 100 events of its Trigger's queue in flight (AMQP prefetch fixed at 100), and a model call takes seconds
# (the seed: 3.5 s vision, 7 s answer), so one Trigger caps a stage at 100 / 7 s = 14 answers a second.
# Every event of the pack carries the extension attribute `shard` (eco2.events.shard_of: crc32 of the job id,
# mod {SHARDS}); each Trigger below takes one shard, with its own queue and dispatcher: {SHARDS} x 100 =
# {SHARDS * PARALLELISM} model calls in flight per stage, enough for 1,000 scans at once.
# Delivery as triggers.yaml's header explains for model stages: 3 retries after 60 s, 120 s and 240 s, the
# timeout per attempt equal to the Service's timeoutSeconds, then the dead-letter sink.
"""


def trigger(function: str, shard: int) -> dict[str, Any]:
    consumed, _emitted = FUNCTION_EVENTS[function]
    service_ref = {"apiVersion": "serving.knative.dev/v1", "kind": "Service"}
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {
            "name": f"{function}-shard-{shard}",
            "namespace": "eco2",
            "labels": {"app.kubernetes.io/part-of": "eco2", "eco2.dev/function": function},
            "annotations": {"rabbitmq.eventing.knative.dev/parallelism": str(PARALLELISM)},
        },
        "spec": {
            "broker": "eco2",
            "filter": {
                "attributes": {
                    "type": str(EventType(consumed)),
                    "priority": Priority.NORMAL.value,
                    SHARD_ATTRIBUTE: str(shard),
                }
            },
            "subscriber": {"ref": {**service_ref, "name": function}},
            "delivery": {
                "retry": 3,
                "backoffPolicy": "exponential",
                "backoffDelay": "PT30S",
                "timeout": DELIVERY_TIMEOUT[function],
                "deadLetterSink": {"ref": {**service_ref, "name": "dead-letter"}},
            },
        },
    }


def render() -> str:
    documents = [trigger(function, shard) for function in SHARDED_FUNCTIONS for shard in range(SHARDS)]
    body = yaml.safe_dump_all(documents, sort_keys=False, explicit_start=False, width=120)
    return HEADER + body


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
