"""AWS for the local stack: an embedded moto server, and the template's tables and bucket in it."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from darkroom.local.template import Stack

if TYPE_CHECKING:
    from botocore.awsrequest import AWSPreparedRequest, AWSResponse
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class EmbeddedAws:
    """A moto server on loopback; serializes requests, as DynamoDB serializes writes to one item."""

    server: ThreadedMotoServer
    endpoint: str

    def stop(self) -> None:
        self.server.stop()


def start_moto(host: str = "127.0.0.1", port: int = 0) -> EmbeddedAws:
    """Start moto's server in this process (port 0: any free port)."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    make_moto_linearizable()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access line per AWS call is noise
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    return EmbeddedAws(server=server, endpoint=f"http://{bound_host}:{bound_port}")


_patched = False


def make_moto_linearizable() -> None:
    """moto's backends are not thread-safe; real DynamoDB applies each conditional update atomically.

    One lock around moto's request dispatch makes every emulated AWS call atomic, which is the
    guarantee darkroom's rate limiter relies on (and no more: darkroom's own code stays concurrent).
    """
    global _patched
    if _patched:
        return
    from moto.core.botocore_stubber import BotocoreStubber
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    lock = threading.RLock()
    dispatch = DomainDispatcherApplication.__call__

    def locked_dispatch(self: DomainDispatcherApplication, environ: dict[str, Any], start_response: Any) -> Any:
        with lock:
            return dispatch(self, environ, start_response)

    # Patched on the classes, on purpose: every moto server and mock in this process goes through the lock.
    DomainDispatcherApplication.__call__ = locked_dispatch  # type: ignore[method-assign]
    stub = BotocoreStubber.__call__

    def locked_stub(
        self: BotocoreStubber, event_name: str, request: AWSPreparedRequest, **kwargs: Any
    ) -> AWSResponse | None:
        with lock:
            return stub(self, event_name, request, **kwargs)

    BotocoreStubber.__call__ = locked_stub  # type: ignore[method-assign]
    _patched = True


def use_endpoint(endpoint: str) -> None:
    """Point this process's boto3 clients at ``endpoint`` with local credentials."""
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    for name, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(name, value)


def create_resources(stack: Stack, dynamodb: Any, s3: Any, sqs: Any = None) -> None:
    """Create the template's DynamoDB tables, S3 buckets and (given a client) SQS queues (idempotent).

    The clients are boto3's (untyped: only boto3-stubs' base package is installed)."""
    existing = set(dynamodb.list_tables()["TableNames"])
    for logical_id, props in stack.of_type("AWS::DynamoDB::Table").items():
        name = stack.physical_name(logical_id)
        if name in existing:
            continue
        args = {
            "TableName": name,
            "AttributeDefinitions": [dict(a) for a in props["AttributeDefinitions"]],
            "KeySchema": [dict(k) for k in props["KeySchema"]],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            args["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": g["IndexName"],
                    "KeySchema": [dict(k) for k in g["KeySchema"]],
                    "Projection": dict(g["Projection"]),
                }
                for g in props["GlobalSecondaryIndexes"]
            ]
        dynamodb.create_table(**args)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True}
            )
    buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for logical_id, props in stack.of_type("AWS::S3::Bucket").items():
        name = stack.physical_name(logical_id)
        if name in buckets:
            continue
        s3.create_bucket(Bucket=name)
        block = props.get("PublicAccessBlockConfiguration")
        if block:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=dict(block))
    if sqs is not None:
        create_queues(stack, sqs)


def create_queues(stack: Stack, sqs: Any) -> None:
    """The template's queues, dead-letter queues first, with their visibility timeouts and redrive policies."""
    queues = stack.of_type("AWS::SQS::Queue")
    arns: dict[str, str] = {}

    def create(logical_id: str) -> None:
        if logical_id in arns:
            return
        props = queues[logical_id]
        attributes: dict[str, str] = {
            name: str(props[name]) for name in ("VisibilityTimeout", "MessageRetentionPeriod") if name in props
        }
        redrive = props.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            create(str(target))
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arns[str(target)], "maxReceiveCount": int(redrive["maxReceiveCount"])}
            )
        url = sqs.create_queue(QueueName=stack.physical_name(logical_id), Attributes=attributes)["QueueUrl"]
        arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    for logical_id in queues:
        create(str(logical_id))
