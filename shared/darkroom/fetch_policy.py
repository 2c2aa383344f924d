"""What an image fetch may reach: the URL rules and the address policy that keep darkroom from being a proxy
into its own network (SSRF). :mod:`darkroom.fetch` applies them to the client's URL and to every redirect hop.

* scheme ``http``/``https``, port 80/443, no userinfo, a host that is a DNS name or a literal IP
  (:func:`parse_url`, :func:`check_url`);
* the host is resolved with ``getaddrinfo`` (A and AAAA, :func:`resolve`), and the fetch is refused if ANY
  address is not acceptable (:func:`address_acceptable`). The resolved socket address is what is checked,
  never the string: ``2130706433``, ``0x7f.1`` and ``127.1`` are all loopback to the resolver.

Every refusal is a :class:`Refused` carrying a reason code for the log and, for what the client wrote, a
message it may be shown; :func:`darkroom.fetch.fetch_image` turns it into the 400.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048

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
    """Bounds for one fetch. ``allow`` is for tests (see :func:`darkroom.fetch.fetcher_from_settings`) and for
    :meth:`origin_only`, never for what a client names."""

    max_bytes: int
    deadline_seconds: float = 5.0
    max_redirects: int = 3
    ports: frozenset[int] = frozenset({80, 443})
    schemes: frozenset[str] = frozenset({"http", "https"})
    # "host:port" exactly as in the URL (lower case, IPv6 in brackets) whose port and address checks
    # are skipped. Tests use it to reach a loopback server, and origin_only to reach a catalog-named model
    # server; a deployment's client-URL fetcher (fetcher_from_settings) must leave it empty.
    allow: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.schemes <= {"http", "https"}:
            raise ValueError("only http and https can be fetched")
        if self.max_bytes < 1 or self.deadline_seconds <= 0 or self.max_redirects < 0:
            raise ValueError("max_bytes and deadline_seconds must be positive, max_redirects >= 0")

    @classmethod
    def origin_only(cls, base_url: str, *, max_bytes: int, deadline_seconds: float) -> FetchPolicy:
        """Exactly ``base_url``'s origin (its scheme, host and port) and nothing else, whatever its address, with
        no redirects: for a model server the operator named in the catalog (often a private address in the
        VPC), never for a URL a client wrote. No port is open but that origin's, so any other host is refused
        before DNS."""
        url = parse_url(base_url)
        if url.scheme not in ("http", "https"):
            raise ValueError("only http and https can be fetched")
        host = url.raw_host.decode("ascii").lower()
        port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
        written = f"[{host}]" if ":" in host else host
        return cls(
            max_bytes=max_bytes,
            deadline_seconds=deadline_seconds,
            max_redirects=0,
            ports=frozenset(),
            schemes=frozenset({url.scheme}),
            allow=frozenset({f"{written}:{port}"}),
        )


class Refused(Exception):
    """A refusal: a reason code for the log, and whether the client may be told what was wrong."""

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


def remaining(deadline: float) -> float:
    """Seconds left before ``deadline`` (monotonic); :class:`Refused` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise Refused("deadline")
    return left


def parse_url(url: str) -> httpx.URL:
    """The client's URL, parsed; :class:`Refused` with a message for the client when it is not one."""
    if len(url) > MAX_URL_LENGTH:
        raise Refused("url_length", f"'{{param}}' is longer than {MAX_URL_LENGTH} characters.")
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
        raise Refused("url_syntax", "'{param}' is not a valid URL.") from None


def check_url(url: httpx.URL, policy: FetchPolicy, *, first: bool) -> tuple[str, str, int]:
    """Scheme, userinfo, host syntax, port: (host as written for the allow list, host, port).

    Only the client's own URL gets a descriptive message; a redirect's target stays neutral."""

    def refuse(reason: str, message: str) -> Refused:
        return Refused(reason, message if first else None)

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


def resolve(host: str, port: int, deadline: float) -> list[IPAddress]:
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
    worker.join(remaining(deadline))
    if worker.is_alive():
        raise Refused("dns_timeout")
    addresses = []
    for family, _type, _proto, _canon, sockaddr in box.get("infos", []):
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise Refused("dns_family")
        try:
            addresses.append(ipaddress.ip_address(sockaddr[0]))
        except ValueError:
            raise Refused("dns_address") from None
    if not addresses:
        raise Refused("dns")
    return list(dict.fromkeys(addresses))
