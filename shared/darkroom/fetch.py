"""Fetching an image from a client-supplied http(s) URL without becoming a proxy into our network (SSRF).

The rules (OWASP SSRF Prevention Cheat Sheet, case "the application can send requests to any external
URL"), each applied to the client's URL and again to every redirect hop:

* scheme ``http``/``https``, port 80/443, no userinfo, a host that is a DNS name or a literal IP;
* resolve the host with ``getaddrinfo`` (A and AAAA) and refuse if ANY address is not acceptable
  (:func:`~darkroom.fetch_policy.address_acceptable`). The resolved socket address is what is checked,
  never the string: ``2130706433``, ``0x7f.1`` and ``127.1`` are all loopback to the resolver;
* connect only to an address that was checked: the request goes to the IP (with the original ``Host``
  header, and the hostname as TLS SNI so the certificate is verified against the name), and the
  network backend refuses to open a socket to anything else. No DNS rebinding window, no proxies
  from the environment, no ``.netrc``;
* redirects are followed by hand (301/302/303/307/308, at most ``max_redirects``), each hop re-checked;
* one deadline for the whole fetch (DNS, connect, TLS, headers, body, redirects): every socket
  operation's timeout is capped by what remains, so a slow-drip server cannot hold the Lambda;
* ``Content-Length`` over the cap is refused before reading; the body is counted while streaming
  (``Accept-Encoding: identity``, raw bytes: no decompression) and abandoned once over the cap.

Every refusal is an :class:`~darkroom.intake.ImageRejected` (400). Problems with what the client
wrote (scheme, port, credentials, host syntax) say so (``invalid_image_url``); everything that
depends on the network (DNS, refused addresses, connection, TLS, status, redirects, timeouts) gets
ONE neutral message and code (``image_url_unreachable``), so answers cannot be used to map networks.
Messages never contain the URL, addresses or the upstream's body; logs get a short reason code only.

The URL and address rules are :mod:`darkroom.fetch_policy`; this module does the HTTP: the pinned
connection, the redirects, the bounded body.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

from darkroom.fetch_policy import (
    FetchPolicy,
    IPAddress,
    Refused,
    address_acceptable,
    check_url,
    parse_url,
    remaining,
    resolve,
)
from darkroom.intake import ImageRejected
from darkroom.observability import logger

if TYPE_CHECKING:
    from darkroom.config import Settings

# FetchPolicy and address_acceptable are imported from here by callers and tests.
__all__ = [
    "UNREACHABLE_CODE",
    "UNREACHABLE_MESSAGE",
    "FetchPolicy",
    "address_acceptable",
    "fetch_image",
    "fetcher_from_settings",
]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
UNREACHABLE_CODE = "image_url_unreachable"
UNREACHABLE_MESSAGE = "The image URL could not be fetched."


def fetch_image(url: str, *, param: str, policy: FetchPolicy) -> tuple[bytes, str | None]:
    """GET ``url`` under ``policy``: (body, the response's Content-Type, informational only).

    Raises :class:`ImageRejected` (400, ``param``) for every refusal and failure."""
    deadline = time.monotonic() + policy.deadline_seconds
    try:
        return _fetch(url, policy, deadline)
    except Refused as refused:
        logger.info("image url refused", extra={"fetch_reason": refused.reason})
        if refused.reason == "too_large":
            raise ImageRejected(
                f"The image in '{param}' is larger than {policy.max_bytes} bytes.", param=param, code="image_too_large"
            ) from None
        if refused.message is not None:
            raise ImageRejected(refused.message.format(param=param), param=param, code="invalid_image_url") from None
        raise ImageRejected(UNREACHABLE_MESSAGE, param=param, code=UNREACHABLE_CODE) from None


def fetcher_from_settings(settings: Settings, max_bytes: int) -> Callable[[str, str], bytes]:
    """A ``(url, param) -> bytes`` fetcher for :func:`darkroom.intake.read_reference`.

    ``settings.fetch_test_allowlist`` (``DARKROOM_FETCH_TEST_ALLOWLIST``, comma-separated ``host:port``)
    exempts those origins from the port and address checks. It exists so tests can serve images from
    loopback; it MUST stay empty in every deployment."""
    allow = frozenset(part.strip().lower() for part in (settings.fetch_test_allowlist or "").split(",") if part.strip())
    policy = FetchPolicy(max_bytes=max_bytes, allow=allow)

    def fetch(url: str, param: str) -> bytes:
        return fetch_image(url, param=param, policy=policy)[0]

    return fetch


# -- the fetch ---------------------------------------------------------------------------------------


def _fetch(url: str, policy: FetchPolicy, deadline: float) -> tuple[bytes, str | None]:
    current = parse_url(url)
    for hop in range(policy.max_redirects + 1):
        target, host, port = check_url(current, policy, first=hop == 0)
        addresses = resolve(host, port, deadline)
        if f"{target}:{port}" not in policy.allow and not all(address_acceptable(a) for a in addresses):
            raise Refused("address")
        outcome = _get(current, addresses, port, policy, deadline)
        if isinstance(outcome, tuple):
            return outcome
        current = outcome  # a redirect: the next hop is checked from scratch
    raise Refused("redirects")


def _get(
    url: httpx.URL, addresses: Iterable[IPAddress], port: int, policy: FetchPolicy, deadline: float
) -> tuple[bytes, str | None] | httpx.URL:
    """One GET of ``url`` at the first checked address that accepts a connection: the body, or the
    next URL when the answer is a redirect."""
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Accept": "image/*",
        "Accept-Encoding": "identity",
        "User-Agent": "darkroom-image-fetch",
        "Connection": "close",
    }
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    for address in addresses:
        pinned = url.copy_with(host=str(address), port=port)
        backend = _PinnedBackend(str(address), port, deadline)
        left = remaining(deadline)
        timeout = httpx.Timeout(left, read=min(left, 1.0))
        try:
            with httpx.Client(
                transport=_PinnedTransport(backend), trust_env=False, follow_redirects=False, timeout=timeout
            ) as client:
                request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
                response = client.send(request, stream=True)
                try:
                    return _answer(response, url, policy, deadline)
                finally:
                    response.close()
        except (httpx.ConnectError, httpx.ConnectTimeout):
            if not backend.connected:
                continue  # this address did not take the connection: the next checked one may
            raise Refused("connect") from None
        except httpx.TimeoutException:
            raise Refused("timeout") from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, ssl.SSLError):
            raise Refused("transport") from None
    raise Refused("connect")


def _answer(
    response: httpx.Response, url: httpx.URL, policy: FetchPolicy, deadline: float
) -> tuple[bytes, str | None] | httpx.URL:
    if response.status_code in REDIRECT_STATUSES:
        location = response.headers.get("location")
        if not location:
            raise Refused("redirect_location")
        try:
            return url.join(location.strip())
        except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
            raise Refused("redirect_location") from None
    if not 200 <= response.status_code < 300:
        raise Refused(f"status_{response.status_code // 100}xx")
    if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
        raise Refused("content_encoding")
    declared = response.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > policy.max_bytes:
                raise Refused("too_large")
        except ValueError:
            raise Refused("content_length") from None
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > policy.max_bytes:
            raise Refused("too_large")
        remaining(deadline)
    content_type = response.headers.get("content-type")
    return bytes(body), content_type.split(";")[0].strip().lower()[:100] if content_type else None


# -- the connection layer: one checked address, one deadline ---------------------------------------


@cache
def _ssl_context() -> ssl.SSLContext:
    """Certificate verification with certifi's roots (what httpx uses), built once per container."""
    return httpx.create_ssl_context(verify=True, trust_env=False)


class _PinnedTransport(httpx.HTTPTransport):
    """httpx's transport with a network backend that can only reach the checked address."""

    def __init__(self, backend: _PinnedBackend) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False, http2=False, retries=0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=1,
            max_keepalive_connections=0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )


class _PinnedBackend(httpcore.NetworkBackend):
    """Opens TCP connections to exactly one (ip, port); every socket operation's timeout is capped by
    the fetch's deadline, so headers and TLS are bounded too, not only the body."""

    def __init__(self, ip: str, port: int, deadline: float) -> None:
        self._inner = httpcore.SyncBackend()
        self._ip, self._port, self._deadline = ip, port, deadline
        self.connected = False

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if (host, port) != (self._ip, self._port):
            raise httpcore.ConnectError("not the checked address")
        stream = self._inner.connect_tcp(
            host, port, timeout=_cap(timeout, self._deadline, httpcore.ConnectTimeout), socket_options=socket_options
        )
        self.connected = True
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, max(self._deadline - time.monotonic(), 0)))


def _cap(timeout: float | None, deadline: float, error: type[Exception]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("deadline")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner, self._deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _cap(timeout, self._deadline, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _cap(timeout, self._deadline, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        # CPython bounds the whole handshake by the socket timeout (one deadline per SSL call).
        stream = self._inner.start_tls(
            ssl_context, server_hostname, _cap(timeout, self._deadline, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(stream, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
