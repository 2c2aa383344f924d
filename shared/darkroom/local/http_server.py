"""The local stack's HTTP/1.1 front: uvicorn (its h11 protocol) parses the wire, a small ASGI app hands
each request to :class:`~darkroom.local.bridge.LocalApi` as API Gateway would.

The parsing (chunked bodies, ``Expect: 100-continue``, keep-alive, malformed ``Content-Length``: 400 and
close, a bounded header block) is h11's. Added here: API Gateway's 10 MB body limit, answered before the
body is read (or as soon as a chunked one passes it), then the connection closed; a deadline on the
client's side of every request, which uvicorn alone does not set; and a lingering close, so that such an
early answer is not lost to a TCP reset.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from darkroom.local.bridge import API_GATEWAY_MAX_BODY, HttpResponse, LocalApi, StreamedBody

# How long a client may take to send a request's headers (counted from the connection opening or the
# previous response), may stay silent in the middle of a body, and may keep an idle connection open.
# Longer than the clients' own keep-alive expiry (httpx 5 s, Node 4-5 s), so they close first.
IDLE_TIMEOUT_SECONDS = 30.0
# On Ctrl-C, requests in flight get this long to finish before they are answered with the gateway's 502.
SHUTDOWN_GRACE_SECONDS = 3
_HOP_BY_HOP = {"content-length", "connection", "transfer-encoding"}
_T = TypeVar("_T")
# ASGI's callables (https://asgi.readthedocs.io/en/latest/specs/main.html): messages are dicts keyed by "type".
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the client's side of each request, and a lingering close.

    uvicorn arms its keep-alive timer only after a response, and any byte cancels it: a connection that
    opens and sends nothing, or trickles its headers (slowloris), would be held forever. Here the
    headers must be complete within ``timeout_keep_alive`` seconds, however they trickle, and a body may
    not go silent for longer than that.
    """

    _deadline: asyncio.TimerHandle | None = None
    _waiting_for: type[h11.IDLE] | type[h11.SEND_BODY] | None = None
    _linger: asyncio.TimerHandle | None = None
    _lost = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.raw_transport = transport
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._watch()

    def data_received(self, data: bytes) -> None:
        if self._linger is not None:  # answered and closing: what the client still sends is dropped unread
            return
        super().data_received(data)
        self._watch(progress=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._disarm()
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def client_may_be_sending(self) -> bool:
        """Whether the client may still be sending this request (a refused body, a malformed request)."""
        return not self._lost and self.conn.their_state in (h11.SEND_BODY, h11.ERROR)

    def linger(self) -> None:
        self._linger = self.loop.call_later(self.timeout_keep_alive, self.raw_transport.close)

    def _watch(self, progress: bool = False) -> None:
        state = self.conn.their_state
        if self.transport.is_closing() or state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()  # the request is in, or the connection is going: nothing to wait for
            return
        # Headers get one deadline however they trickle in; a body gets a new one whenever bytes arrive.
        if state is not self._waiting_for or (progress and state is h11.SEND_BODY):
            self._disarm()
            self._deadline = self.loop.call_later(self.timeout_keep_alive, self._expire)
            self._waiting_for = state

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._waiting_for = None, None

    def _expire(self) -> None:
        self._deadline = None
        self.raw_transport.close()


class _LingeringTransport:
    """A connection's transport whose ``close`` lingers while the client may still be sending.

    Closing a socket with unread bytes makes the kernel send a reset, which can destroy an answer (a 413
    for a body never read, a 400) before the client reads it. So, as nginx and Apache do, the server
    half-closes, drops whatever still arrives, and closes when the client does or after the idle timeout.
    """

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._lingering or self._transport.is_closing()

    def close(self) -> None:
        if self._lingering or self._transport.is_closing() or not self._protocol.client_may_be_sending():
            self._transport.close()
            return
        try:
            self._transport.write_eof()  # once the answer is flushed
        except OSError:  # the client is already gone
            self._transport.close()
            return
        self._lingering = True
        self._transport.resume_reading()  # flow control may have paused it
        self._protocol.linger()


async def _in_thread(function: Callable[..., _T], *args: Any) -> _T:
    """``function(*args)`` in a thread of its own, awaited.

    A daemon thread per request, not an executor: the function pools already bound concurrency, and a
    stopping server must not wait for (or be blocked by) invocations still running.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # the request was cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = function(*args), None
        except BaseException as caught:  # noqa: BLE001 - handed to the awaiting task, which raises it
            result, error = None, caught
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: the server stopped while this ran
            pass

    threading.Thread(target=run, daemon=True, name="darkroom-request").start()
    return await future


class _Disconnected(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body; None as soon as it passes ``limit`` (the rest is never read)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone away (the request's body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class GatewayApp:
    """The ASGI application: one HTTP request in, the API Gateway REST proxy answer out."""

    def __init__(self, api: LocalApi, access_log: bool = True) -> None:
        self.api = api
        self.access_log = access_log

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off and websockets are not served
            return
        method = scope["method"]
        query = scope["query_string"].decode("latin-1")
        target = scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        # h11 has already refused (400) a Content-Length that is not a single non-negative integer.
        declared = next((int(value) for name, value in headers if name == "content-length"), 0)
        close = False
        if declared > API_GATEWAY_MAX_BODY:
            body = None  # refused from the headers: the body is never read
        else:
            try:
                body = await _read_body(receive, API_GATEWAY_MAX_BODY)
            except _Disconnected:
                return
        if body is None:
            # The connection closes after the answer: the unread rest of the body must not become a request.
            response, close = self.api.gateway_response("REQUEST_TOO_LARGE"), True
        else:
            client = (scope.get("client") or ("127.0.0.1",))[0]
            try:
                response = await _in_thread(self.api.handle, method, target, headers, body, client)
            except asyncio.CancelledError:
                # The server is stopping and the grace period ran out: the gateway's answer for a lost function.
                response, close = self.api.gateway_response("INTEGRATION_FAILURE"), True
        if response.stream is None:
            await self._send(send, response, close)
        else:
            await self._send_streamed(send, receive, response, response.stream)
        if self.access_log:
            # The template's access-log line (darkroom.local.access_log), or method, path and status for what the
            # gateway refused before routing: never query strings, headers or bodies.
            sys.stderr.write((response.access_log or f"{method} {urlsplit(target).path} {response.status}") + "\n")

    @staticmethod
    def _head(response: HttpResponse) -> list[tuple[bytes, bytes]]:
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers
            if name.lower() not in _HOP_BY_HOP
        ]
        if not any(name == b"content-type" for name, _ in headers):
            headers.append((b"content-type", b"application/json"))
        return headers

    @classmethod
    async def _send(cls, send: Send, response: HttpResponse, close: bool) -> None:
        headers = cls._head(response)
        headers.append((b"content-length", str(len(response.body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    @classmethod
    async def _send_streamed(cls, send: Send, receive: Receive, response: HttpResponse, stream: StreamedBody) -> None:
        """The head, then each chunk as the function makes it (no Content-Length: uvicorn frames it chunked); when
        the client goes away, the function is told to close its producer, and the stream is read to its end."""
        await send({"type": "http.response.start", "status": response.status, "headers": cls._head(response)})
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            while True:
                read = asyncio.ensure_future(_in_thread(stream.read))
                await asyncio.wait({read, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    stream.close()
                    while await read is not None:
                        read = asyncio.ensure_future(_in_thread(stream.read))
                    return
                chunk = read.result()
                await send({"type": "http.response.body", "body": chunk or b"", "more_body": chunk is not None})
                if chunk is None:
                    return
        except asyncio.CancelledError:  # the server is stopping: the function's producer is closed too
            stream.close()
            raise
        finally:
            gone.cancel()


class LocalServer:
    """uvicorn serving :class:`GatewayApp` on a socket bound at construction, so the port is known (and
    printed) before serving starts. The calls mirror ``socketserver``'s: ``serve_forever`` (Ctrl-C and
    SIGTERM end it gracefully in the main thread), ``shutdown`` from another thread, ``server_close``."""

    def __init__(
        self,
        api: LocalApi,
        host: str = "127.0.0.1",
        port: int = 3000,
        quiet: bool = False,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        listener: socket.socket | None = None,
    ) -> None:
        self.socket = listener or listen(host, port)
        self.server_address = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            GatewayApp(api, access_log=not quiet),
            http=_Protocol,
            ws="none",
            lifespan="off",
            interface="asgi3",
            loop="asyncio",
            # uvicorn annotates int, but only hands the value to loop.call_later, which takes float seconds.
            timeout_keep_alive=idle_timeout,  # type: ignore[arg-type]
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            # The peer is the client (no X-Forwarded-For trust), as API Gateway's sourceIp is.
            proxy_headers=False,
            server_header=False,
            # uvicorn's own access lines are replaced by GatewayApp's; its warnings (e.g. a malformed request) stay.
            access_log=False,
            log_level="error" if quiet else "warning",
        )
        self._server = uvicorn.Server(config)
        self._stopped = threading.Event()
        self._stopped.set()

    def serve_forever(self) -> None:
        self._stopped.clear()
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving (from another thread) and wait until ``serve_forever`` has returned."""
        self._server.should_exit = True
        self._stopped.wait()

    def server_close(self) -> None:
        self.socket.close()


def listen(host: str = "127.0.0.1", port: int = 3000) -> socket.socket:
    """A socket listening on ``host:port`` (0: any free port); ``OSError`` when the port is taken.

    Bound before the rest of the stack starts, so a busy port is reported at once; connections made meanwhile
    wait in its backlog until the server serves."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def make_server(
    api: LocalApi,
    host: str = "127.0.0.1",
    port: int = 3000,
    quiet: bool = False,
    idle_timeout: float = IDLE_TIMEOUT_SECONDS,
    listener: socket.socket | None = None,
) -> LocalServer:
    """The local HTTP server for ``api``, on ``listener`` or else bound to ``host:port`` (0: any free port), not
    yet serving."""
    return LocalServer(api, host, port, quiet=quiet, idle_timeout=idle_timeout, listener=listener)
