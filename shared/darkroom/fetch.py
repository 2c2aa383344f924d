"""Fetching an image from a client-supplied http(s) URL without becoming a proxy into our network (SSRF).

The rules (OWASP SSRF Prevention Cheat Sheet, case "the application can send requests to any external
URL"), each applied to the client's URL and again to every redirect hop:

* scheme ``http``/``https``, port 80/443, no userinfo, a host that is a DNS name or a literal IP;
* resolve the host with ``getaddrinfo`` (A and AAAA) and refuse if ANY address is not acceptable
  (:func:`address_acceptable`). The resolved socket address is what is checked, never the string:
  ``2130706433``, ``0x7f.1`` and ``127.1`` are all loopback to the resolver;
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
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpcore
import httpx

from darkroom.intake import ImageRejected
from darkroom.observability import logger

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_URL_LENGTH = 2048
UNREACHABLE_CODE = "image_url_unreachable"
UNREACHABLE_MESSAGE = "The image URL could not be fetched."

# Ranges refused outright, after IPv4-mapped addresses are unwrapped. Most are not global anyway;
# they are listed because ``is_global`` misses some (CGNAT before 3.12, the embedding prefixes) and
# CPython's tables were wrong before 3.11.10 / 3.12.4 (CVE-2024-4032).
_DENY_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_DENY_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "::/96",  # unspecified, loopback, IPv4-compatible (deprecated, embeds IPv4)
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translates to whatever the operator routes
        "100::/64",
        "2001::/32",
        "2001:db8::/32",  # discard, Teredo (embeds IPv4), documentation
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",  # unique-local, link-local, site-local, multicast
        "fd00:ec2::254/128",  # EC2 instance metadata over IPv6 (inside fc00::/7; named for the record)
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix: the last 32 bits are the IPv4
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")  # 6to4: bits 16-48 are the IPv4

_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class FetchPolicy:
    """Bounds for one fetch. ``allow`` is for tests ONLY: see :func:`fetcher_from_settings`."""

    max_bytes: int
    deadline_seconds: float = 5.0
    max_redirects: int = 3
    ports: frozenset[int] = frozenset({80, 443})
    schemes: frozenset[str] = frozenset({"http", "https"})
    # "host:port" exactly as in the URL (lower case, IPv6 in brackets) whose port and address checks
    # are skipped. Tests use it to reach a loopback server; a deployment must leave it empty.
    allow: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.schemes <= {"http", "https"}:
            raise ValueError("only http and https can be fetched")
        if self.max_bytes < 1 or self.deadline_seconds <= 0 or self.max_redirects < 0:
            raise ValueError("max_bytes and deadline_seconds must be positive, max_redirects >= 0")


class _Refused(Exception):
    """Internal: a reason code for the log, and whether the client may be told what was wrong."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message  # None: the neutral answer


def address_acceptable(address: IPAddress) -> bool:
    """Whether darkroom may connect to ``address``: globally routable and in no denied range.

    IPv4-mapped IPv6 (``::ffff:a.b.c.d``) is judged as its IPv4; the well-known NAT64 prefix and 6to4
    are judged by the IPv4 they embed (and must also be global themselves)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:  # a zone (fe80::1%eth0) only exists for local addresses
            return False
        if address.ipv4_mapped is not None:
            return address_acceptable(address.ipv4_mapped)
        if any(address in net for net in _DENY_V6):
            return False
        if address in _NAT64:
            return address_acceptable(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address in _SIX_TO_FOUR:
            return address_acceptable(ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF))
        return address.is_global
    if any(address in net for net in _DENY_V4):
        return False
    return address.is_global


def fetch_image(url: str, *, param: str, policy: FetchPolicy) -> tuple[bytes, str | None]:
    """GET ``url`` under ``policy``: (body, the response's Content-Type, informational only).

    Raises :class:`ImageRejected` (400, ``param``) for every refusal and failure."""
    deadline = time.monotonic() + policy.deadline_seconds
    try:
        return _fetch(url, policy, deadline)
    except _Refused as refused:
        logger.info("image url refused", extra={"fetch_reason": refused.reason})
        if refused.reason == "too_large":
            raise ImageRejected(
                f"The image in '{param}' is larger than {policy.max_bytes} bytes.", param=param, code="image_too_large"
            ) from None
        if refused.message is not None:
            raise ImageRejected(refused.message.format(param=param), param=param, code="invalid_image_url") from None
        raise ImageRejected(UNREACHABLE_MESSAGE, param=param, code=UNREACHABLE_CODE) from None


def fetcher_from_settings(settings: Any, max_bytes: int) -> Callable[[str, str], bytes]:
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


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Refused("deadline")
    return left


def _fetch(url: str, policy: FetchPolicy, deadline: float) -> tuple[bytes, str | None]:
    current = _parse(url)
    for hop in range(policy.max_redirects + 1):
        target, host, port = _check(current, policy, first=hop == 0)
        addresses = _resolve(host, port, deadline)
        if f"{target}:{port}" not in policy.allow and not all(address_acceptable(a) for a in addresses):
            raise _Refused("address")
        outcome = _get(current, addresses, port, policy, deadline)
        if isinstance(outcome, tuple):
            return outcome
        current = outcome  # a redirect: the next hop is checked from scratch
    raise _Refused("redirects")


def _parse(url: str) -> httpx.URL:
    if len(url) > MAX_URL_LENGTH:
        raise _Refused("url_length", f"'{{param}}' is longer than {MAX_URL_LENGTH} characters.")
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
        raise _Refused("url_syntax", "'{param}' is not a valid URL.") from None


def _check(url: httpx.URL, policy: FetchPolicy, *, first: bool) -> tuple[str, str, int]:
    """Scheme, userinfo, host syntax, port: (host as written for the allow list, host, port).

    Only the client's own URL gets a descriptive message; a redirect's target stays neutral."""

    def refuse(reason: str, message: str) -> _Refused:
        return _Refused(reason, message if first else None)

    if url.scheme not in policy.schemes:
        raise refuse("scheme", "'{param}' must be an http(s) URL or a base64 data URL.")
    if url.userinfo:
        raise refuse("userinfo", "'{param}' must not contain a user name or password.")
    try:
        host = url.raw_host.decode("ascii").lower()
    except UnicodeError:
        raise refuse("host", "'{param}' does not have a valid host name.") from None
    if not _valid_host(host):
        raise refuse("host", "'{param}' does not have a valid host name.")
    port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
    written = f"[{host}]" if ":" in host else host
    if port not in policy.ports and f"{written}:{port}" not in policy.allow:
        ports = " or ".join(str(p) for p in sorted(policy.ports))
        raise refuse("port", f"'{{param}}' must use port {ports}.")
    return written, host, port


def _valid_host(host: str) -> bool:
    """A literal IP (IPv6 without brackets) or a DNS name of letters, digits and hyphens."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in name.split("."))


def _resolve(host: str, port: int, deadline: float) -> list[IPAddress]:
    """Every address ``getaddrinfo`` gives for ``host`` (A and AAAA), within the deadline.

    ``getaddrinfo`` cannot be interrupted; it runs in a daemon thread that is abandoned at the deadline."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError):
            box["infos"] = []

    worker = threading.Thread(target=run, name="darkroom-fetch-dns", daemon=True)
    worker.start()
    worker.join(_remaining(deadline))
    if worker.is_alive():
        raise _Refused("dns_timeout")
    addresses = []
    for family, _type, _proto, _canon, sockaddr in box.get("infos", []):
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise _Refused("dns_family")
        try:
            addresses.append(ipaddress.ip_address(sockaddr[0]))
        except ValueError:
            raise _Refused("dns_address") from None
    if not addresses:
        raise _Refused("dns")
    return list(dict.fromkeys(addresses))


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
        remaining = _remaining(deadline)
        timeout = httpx.Timeout(remaining, read=min(remaining, 1.0))
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
            raise _Refused("connect") from None
        except httpx.TimeoutException:
            raise _Refused("timeout") from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, ssl.SSLError):
            raise _Refused("transport") from None
    raise _Refused("connect")


def _answer(
    response: httpx.Response, url: httpx.URL, policy: FetchPolicy, deadline: float
) -> tuple[bytes, str | None] | httpx.URL:
    if response.status_code in REDIRECT_STATUSES:
        location = response.headers.get("location")
        if not location:
            raise _Refused("redirect_location")
        try:
            return url.join(location.strip())
        except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
            raise _Refused("redirect_location") from None
    if not 200 <= response.status_code < 300:
        raise _Refused(f"status_{response.status_code // 100}xx")
    if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
        raise _Refused("content_encoding")
    declared = response.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > policy.max_bytes:
                raise _Refused("too_large")
        except ValueError:
            raise _Refused("content_length") from None
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > policy.max_bytes:
            raise _Refused("too_large")
        _remaining(deadline)
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
