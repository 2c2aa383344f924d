"""``InvokeEndpointWithResponseStream`` for the LOCAL SageMaker Runtime emulator (:mod:`darkroom_endpoint.runtime`;
never on SageMaker), and the AWS event-stream encoding its answer needs.

From botocore's service model (``botocore/data/sagemaker-runtime/2017-05-13/service-2.json``, botocore 1.44.8):
``POST /endpoints/{EndpointName}/invocations-response-stream``, the body (``BodyBlob``, at most 6,291,456 bytes)
with ``Content-Type`` and ``X-Amzn-SageMaker-Accept``. The answer's ``Body`` is the ``ResponseStream`` event
stream (``application/vnd.amazon.eventstream``): ``PayloadPart`` events whose payload is ``Bytes`` (the
``eventpayload`` blob), and the exception events ``ModelStreamError`` (``Message``, ``ErrorCode``:
``ModelInvocationTimeExceeded`` or ``StreamBroken``) and ``InternalStreamFailure``. The container's content type
comes back in ``X-Amzn-SageMaker-Content-Type``. API reference:
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointWithResponseStream.html and
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_ResponseStream.html.

As on SageMaker, a container error before its answer starts is InvokeEndpoint's ``ModelError`` (HTTP 424); each
chunk of the container's answer is one ``PayloadPart``; an answer that breaks after it started (here: the stream
raises) ends with a ``ModelStreamError`` event with ``ErrorCode`` ``StreamBroken``. A request without
``"stream": true`` is answered whole, as one ``PayloadPart``. SageMaker's own time limit on a stream
(``ModelInvocationTimeExceeded``) is not emulated.

The encoding (no maintained Python library encodes event-stream messages: botocore only decodes them, in
``botocore/eventstream.py``, against which the tests check this): each message is a 12-byte prelude (total length,
headers length, both big-endian uint32, then the CRC32 of those 8 bytes), the headers (name length uint8, name,
value type 7 = string, value length uint16, value), the payload, and the CRC32 of everything before it.
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from collections.abc import AsyncIterator

from starlette.responses import Response

from darkroom_endpoint.replies import Reply
from darkroom_endpoint.streaming import NDJSON, Stream, StreamResponse

logger = logging.getLogger("darkroom_endpoint.runtime")

EVENT_STREAM = "application/vnd.amazon.eventstream"
_STRING = 7  # the event-stream header value type "string"


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message (string headers only, which is all these events use)."""
    encoded = b"".join(_header(name, value) for name, value in headers.items())
    prelude = struct.pack("!II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack("!I", zlib.crc32(message))


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", _STRING, len(raw_value)) + raw_value


def payload_part(chunk: bytes) -> bytes:
    """A ``PayloadPart`` event carrying ``chunk``."""
    headers = {":event-type": "PayloadPart", ":content-type": "application/octet-stream", ":message-type": "event"}
    return encode_message(headers, chunk)


def model_stream_error(message: str, code: str = "StreamBroken") -> bytes:
    """A ``ModelStreamError`` exception event (botocore raises it as ``EventStreamError`` while iterating)."""
    headers = {":exception-type": "ModelStreamError", ":content-type": "application/json", ":message-type": "exception"}
    return encode_message(headers, json.dumps({"Message": message, "ErrorCode": code}).encode("utf-8"))


async def _events(stream: Stream) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream.lines():
            yield payload_part(chunk)
    except Exception as exc:  # noqa: BLE001 - after the answer started, SageMaker can only end the stream
        logger.error("the container's stream broke: %s", type(exc).__name__)
        stream.cancel()
        yield model_stream_error("The model's response stream was broken before it completed.")


def stream_response(outcome: Reply | Stream, headers: dict[str, str]) -> Response:
    """A 2xx answer of the container (streamed, or whole) as the event stream, with InvokeEndpoint's headers."""
    if isinstance(outcome, Reply):
        headers = {**headers, "X-Amzn-SageMaker-Content-Type": outcome.content_type}
        return Response(payload_part(outcome.body), media_type=EVENT_STREAM, headers=headers)
    headers = {**headers, "X-Amzn-SageMaker-Content-Type": NDJSON}
    return StreamResponse(_events(outcome), outcome, EVENT_STREAM, headers=headers)
