"""Lines reassembled from a streamed answer's arbitrary chunks, within a line's and the stream's byte caps.

Both streamed upstreams are line-framed: SageMaker's darkroom contract sends NDJSON, an OpenAI-compatible server
sends server-sent events. A line ends at CRLF, LF or CR, as the event-stream format defines
(https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream); a bare CR is never
inside an NDJSON line either, since JSON escapes control characters in strings (RFC 8259, section 7). Only the new
chunk is searched for line ends, never the pending part, so a long line costs linear time.
"""

from __future__ import annotations

from collections.abc import Callable

# A streamed text answer's cap, whatever the upstream (openai_stream, bedrock_stream): past it, a 502.
MAX_TEXT_BYTES = 16 * 1024 * 1024


class Lines:
    """Lines from chunks; past ``max_line`` bytes in one line or ``max_total`` in all, ``too_large()`` is raised."""

    def __init__(self, max_line: int, max_total: int, too_large: Callable[[], Exception]) -> None:
        self._pending = bytearray()
        self._total = 0
        self._max_line = max_line
        self._max_total = max_total
        self._too_large = too_large
        self._cr = False  # the last chunk ended with CR: an LF that starts the next one belongs to it

    def feed(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes, without their line ends."""
        self._total += len(data)
        if self._total > self._max_total:
            raise self._too_large()
        if self._cr and data.startswith(b"\n"):
            data = data[1:]
        self._cr = data.endswith(b"\r")
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines: list[bytes] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._extend(data[start:end])
            lines.append(bytes(self._pending))
            self._pending.clear()
            start = end + 1
        self._extend(data[start:])
        return lines

    def _extend(self, data: bytes) -> None:
        if len(self._pending) + len(data) > self._max_line:
            raise self._too_large()
        self._pending += data
