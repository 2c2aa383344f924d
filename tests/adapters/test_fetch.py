"""The image URL fetcher against a loopback canary that counts every connection it is offered.

Network rule for this file: real traffic goes only to 127.0.0.0/8 and ::1. Other addresses are
produced by a fake ``getaddrinfo`` for made-up names, the connection layer is replaced by a recorder,
and an autouse guard makes any other ``connect`` fail the test."""

from __future__ import annotations

import io
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from darkroom import fetch, intake
from darkroom.config import Settings
from darkroom.fetch import FetchPolicy, address_acceptable, fetch_image, fetcher_from_settings
from darkroom.intake import ImageRejected, IntakeLimits

PARAM = "images[0].image_url"
LOOPBACK_HOSTS = {"127.0.0.1", "::1"}


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()
Route = Callable[[BaseHTTPRequestHandler], None]


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    handler.send_response(status)
    headers.setdefault("Content-Length", str(len(body)))
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


def _serve_png(handler: BaseHTTPRequestHandler) -> None:
    _send(handler, 200, PNG, Content_Type="image/png")


class Server:
    """A threaded loopback HTTP server counting connections and requests; unknown paths get a PNG."""

    def __init__(self, routes: dict[str, Route] | None = None, *, host: str = "127.0.0.1") -> None:
        self.routes = routes or {}
        self.connections = 0
        self.requests: list[tuple[str, str | None]] = []  # (path, Host header)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append((self.path, self.headers.get("Host")))
                try:
                    outer.routes.get(self.path, _serve_png)(self)
                except OSError:  # the fetcher hung up: that is often the point
                    pass

            do_POST = do_PUT = do_HEAD = do_DELETE = do_GET

            def log_message(self, *args: object) -> None:
                pass

        class HTTPServer(ThreadingHTTPServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

            def process_request(self, request, client_address):
                outer.connections += 1
                super().process_request(request, client_address)

        self.httpd = HTTPServer((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers: list[Server] = []

    def start(routes: dict[str, Route] | None = None, **kwargs) -> Server:
        servers.append(Server(routes, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def canary(serve) -> Server:
    return serve()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any TCP connect outside loopback fails the test (and never leaves the machine)."""
    real_connect = socket.socket.connect
    attempts: list[str] = []

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if (
            sock.family in (socket.AF_INET, socket.AF_INET6)
            and not ipaddress.ip_address(host.split("%")[0]).is_loopback
        ):
            attempts.append(host)
            raise AssertionError(f"test tried to connect outside loopback: {host}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == []


@pytest.fixture
def fake_dns(monkeypatch):
    """``fake_dns["name.test"] = [addresses]``: getaddrinfo answers those for made-up names."""
    table: dict[str, list[str]] = {}
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if name in table:
            lookups.append(name)
            infos = []
            for text in table[name]:
                fam = socket.AF_INET6 if ":" in text else socket.AF_INET
                sockaddr = (text, port, 0, 0) if fam == socket.AF_INET6 else (text, port)
                infos.append((fam, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
            return infos
        return real(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return FakeDNS(table, lookups)


class FakeDNS:
    def __init__(self, table: dict[str, list[str]], lookups: list[str]) -> None:
        self.table, self.lookups = table, lookups

    def __setitem__(self, name: str, addresses: list[str]) -> None:
        self.table[name] = addresses


@pytest.fixture
def transport_calls(monkeypatch):
    """Every request that reaches httpx's connection layer; only loopback ones are passed on."""
    calls: list[httpx.Request] = []
    real = httpx.HTTPTransport.handle_request

    def handle_request(self, request):
        calls.append(request)
        if request.url.host in LOOPBACK_HOSTS:
            return real(self, request)
        raise httpx.ConnectError("recorded, not sent")

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", handle_request)
    return calls


def _policy(*servers: Server, max_bytes: int = 1024 * 1024, **kwargs) -> FetchPolicy:
    return FetchPolicy(max_bytes=max_bytes, allow=frozenset(s.origin for s in servers), **kwargs)


def _refused(url: str, policy: FetchPolicy, code: str = "image_url_unreachable") -> ImageRejected:
    with pytest.raises(ImageRejected) as error:
        fetch_image(url, param=PARAM, policy=policy)
    rejected = error.value
    assert (rejected.status, rejected.code, rejected.param) == (400, code, PARAM)
    assert url not in rejected.message and "127.0.0.1" not in rejected.message
    assert "://" not in rejected.message and "localhost" not in rejected.message
    if code == "image_url_unreachable":
        assert rejected.message == "The image URL could not be fetched."
    return rejected


# -- the address classifier ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.170.2",
        "10.0.0.1",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.1.2.3",
        "0.0.0.0",  # noqa: S104
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "192.0.0.8",
        "192.0.2.1",
        "198.18.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fd00:ec2::254",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:169.254.169.254",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "::a9fe:a9fe",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "64:ff9b:1::808:808",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::",
        "2002:a00:1::",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    ],
)
def test_internal_addresses_are_not_acceptable(address):
    assert not address_acceptable(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::"],
)
def test_public_addresses_are_acceptable(address):
    assert address_acceptable(ipaddress.ip_address(address))


def test_a_zone_id_is_never_acceptable():
    assert not address_acceptable(ipaddress.ip_address("2606:4700:4700::1111%eth0"))


# -- loopback in every spelling, against the real resolver and a real canary -------------------------

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/x.png",
    "http://localhost:{port}/",
    "http://2130706433:{port}/",
    "http://0x7f.1:{port}/",
    "http://127.1:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://017700000001:{port}/",
    "http://LocalHost:{port}/",
]


def _reasons(caplog) -> list[str]:
    return [r.fetch_reason for r in caplog.records if r.name == "darkroom" and hasattr(r, "fetch_reason")]


@pytest.mark.parametrize("template", LOOPBACK_SPELLINGS)
def test_loopback_spellings_never_reach_the_canary(canary, template, caplog):
    url = template.format(port=canary.port)
    with caplog.at_level("INFO", logger="darkroom"):
        _refused(url, _policy(), code="invalid_image_url")  # the port alone refuses it...
        # ...and with the canary's port allowed, the resolved address does: the string is never trusted.
        _refused(url, _policy(ports=frozenset({80, 443, canary.port})))
    assert _reasons(caplog) == ["port", "address"]
    assert canary.connections == 0 and canary.requests == []


def test_ipv6_loopback_never_reaches_a_v6_canary(serve):
    try:
        canary6 = serve(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    _refused(f"http://[::1]:{canary6.port}/", _policy(ports=frozenset({80, 443, canary6.port})))
    _refused(f"http://[0:0:0:0:0:0:0:1]:{canary6.port}/", _policy(ports=frozenset({80, 443, canary6.port})))
    assert canary6.connections == 0


@pytest.mark.parametrize(
    "template",
    [
        "ftp://127.0.0.1:{port}/x.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{port}/",
        "http://user:pw@127.0.0.1:{port}/",
        "http://user@127.0.0.1:{port}/",
        "dict://127.0.0.1:{port}/",
        "http:///x.png",
        "http://exa_mple.com/",
    ],
)
def test_schemes_credentials_and_bad_hosts_are_described_and_not_fetched(canary, template):
    # Even with the canary allowlisted, these are refused before anything is resolved.
    rejected = _refused(template.format(port=canary.port), _policy(canary), code="invalid_image_url")
    assert "'images[0].image_url'" in rejected.message
    assert canary.connections == 0


def test_non_standard_ports_are_refused_before_resolving(fake_dns, transport_calls, canary, serve):
    fake_dns["images.example.test"] = ["93.184.215.14"]
    for url in [
        "http://images.example.test:8080/a.png",
        "https://images.example.test:8443/a.png",
        "http://images.example.test:22/",
        "http://images.example.test:0/",
    ]:
        _refused(url, _policy(canary), code="invalid_image_url")
    # The allow list is "host:port" as written: another spelling of an allowed origin is not allowed.
    public = serve()
    _refused(f"http://localhost:{public.port}/", _policy(public), code="invalid_image_url")
    assert fake_dns.lookups == [] and transport_calls == []
    assert canary.connections == 0 and public.connections == 0


@pytest.mark.parametrize(
    "addresses",
    [
        ["169.254.169.254"],
        ["10.0.0.1"],
        ["100.64.0.1"],
        ["fd00:ec2::254"],
        ["64:ff9b::a9fe:a9fe"],
        ["2002:7f00:1::"],
        ["::ffff:169.254.169.254"],
        ["0.0.0.0"],  # noqa: S104
        ["fe80::1%1"],
        ["93.184.215.14", "10.0.0.1"],
        ["2606:4700:4700::1111", "fd00::1"],  # ANY bad address refuses
    ],
)
def test_names_resolving_to_internal_addresses_are_never_connected(fake_dns, transport_calls, addresses):
    fake_dns["metadata.example.test"] = addresses
    _refused("http://metadata.example.test/latest/meta-data/", _policy())
    _refused("https://metadata.example.test/x.png", _policy())
    assert fake_dns.lookups and transport_calls == []


def test_the_request_goes_to_the_checked_ip_with_the_name_as_host_and_sni(fake_dns, transport_calls):
    fake_dns["cdn.example.test"] = ["93.184.215.14", "2606:4700:4700::1111"]
    _refused("https://cdn.example.test/a/b.png?x=1", _policy())  # the recorder refuses to send
    hosts = [request.url.host for request in transport_calls]
    assert hosts == ["93.184.215.14", "2606:4700:4700::1111"]  # the next checked address on connect failure
    for request in transport_calls:
        assert request.headers["host"] == "cdn.example.test"
        assert request.extensions["sni_hostname"] == "cdn.example.test"
        assert request.url.raw_path == b"/a/b.png?x=1" and request.url.port is None  # 443 is https's own
        assert request.headers["accept-encoding"] == "identity"


def test_an_unresolvable_name_is_the_neutral_error(fake_dns, transport_calls):
    fake_dns["nowhere.example.test"] = []
    _refused("http://nowhere.example.test/", _policy())
    assert transport_calls == []


# -- redirects ----------------------------------------------------------------------------------------


def test_a_redirect_to_the_canary_is_refused(serve, canary):
    public = serve(
        {
            "/r": lambda h: _send(h, 302, Location=f"http://127.0.0.1:{canary.port}/x.png"),
            "/r303": lambda h: _send(h, 303, Location=f"//127.0.0.1:{canary.port}/"),
            "/r307": lambda h: _send(h, 307, Location=f"http://localhost:{canary.port}/"),
        }
    )
    for path in ("/r", "/r303", "/r307"):
        _refused(f"http://{public.origin}{path}", _policy(public))
        _refused(f"http://{public.origin}{path}", _policy(public, ports=frozenset({80, 443, canary.port})))
    assert canary.connections == 0 and len(public.requests) == 6


def test_a_redirect_to_a_name_resolving_inside_is_refused(serve, fake_dns, transport_calls):
    fake_dns["inside.example.test"] = ["169.254.169.254"]
    public = serve(
        {
            "/r": lambda h: _send(h, 301, Location="http://inside.example.test/latest/meta-data/"),
            "/s": lambda h: _send(h, 308, Location="https://user:pw@inside.example.test/"),
            "/f": lambda h: _send(h, 302, Location="file:///etc/passwd"),
        }
    )
    for path in ("/r", "/s", "/f"):
        _refused(f"http://{public.origin}{path}", _policy(public))  # neutral, even for the scheme
    assert [r.url.host for r in transport_calls] == ["127.0.0.1"] * 3
    assert fake_dns.lookups == ["inside.example.test"]


def test_relative_redirects_are_followed_and_hops_are_capped(serve):
    public = serve(
        {
            "/a": lambda h: _send(h, 302, Location="b"),
            "/b": lambda h: _send(h, 301, Location="/img.png"),
            "/loop": lambda h: _send(h, 302, Location="/loop"),
            "/nowhere": lambda h: _send(h, 302),
        }
    )
    body, content_type = fetch_image(f"http://{public.origin}/a", param=PARAM, policy=_policy(public))
    assert body == PNG and content_type == "image/png"
    assert [path for path, _ in public.requests] == ["/a", "/b", "/img.png"]
    public.requests.clear()
    _refused(f"http://{public.origin}/loop", _policy(public, max_redirects=3))
    assert len(public.requests) == 4
    _refused(f"http://{public.origin}/nowhere", _policy(public))


# -- what an allowed server can do ---------------------------------------------------------------------


def test_an_allowlisted_server_serves_a_png(serve):
    public = serve()
    body, content_type = fetch_image(f"http://{public.origin}/x.png", param=PARAM, policy=_policy(public))
    assert body == PNG and content_type == "image/png"
    assert public.requests == [("/x.png", public.origin)]  # the original Host header


def test_content_length_over_the_cap_is_refused_without_reading(serve):
    def huge(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "10000000")
        handler.end_headers()
        handler.wfile.flush()
        time.sleep(2)  # reading any of the body would take this long
        handler.wfile.write(b"\x00" * 1000)

    public = serve({"/huge": huge})
    started = time.monotonic()
    rejected = _refused(f"http://{public.origin}/huge", _policy(public, max_bytes=64 * 1024), code="image_too_large")
    assert time.monotonic() - started < 1.0
    assert "65536" in rejected.message


def test_a_chunked_body_over_the_cap_is_cut(serve):
    written = []

    def chunked(handler):
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(200):  # 3.2 MB offered
            handler.wfile.write(b"4000\r\n" + b"\x00" * 0x4000 + b"\r\n")
            written.append(0x4000)
        handler.wfile.write(b"0\r\n\r\n")

    public = serve({"/chunked": chunked})
    _refused(f"http://{public.origin}/chunked", _policy(public, max_bytes=64 * 1024), code="image_too_large")


def _drip(prefix: bytes, drops: bytes, interval: float) -> Route:
    def route(handler):
        handler.wfile.write(prefix)
        handler.wfile.flush()
        for byte in drops:
            time.sleep(interval)
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()

    return route


def test_slow_drip_servers_are_cut_at_the_deadline(serve):
    body_drip = _drip(b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n", b"x" * 200, 0.2)
    header_drip = _drip(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 200, 0.2)
    public = serve({"/body": body_drip, "/headers": header_drip, "/silent": lambda h: time.sleep(3)})
    for path in ("/body", "/headers", "/silent"):
        started = time.monotonic()
        _refused(f"http://{public.origin}{path}", _policy(public, deadline_seconds=1.5))
        assert time.monotonic() - started < 3.0, path


@pytest.mark.parametrize("status", [404, 403, 500, 204, 100])
def test_error_statuses_are_the_neutral_error(serve, status):
    public = serve(
        {
            "/x": lambda h: (
                _send(h, status, b"secret upstream body")
                if status != 100
                else h.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            )
        }
    )
    if status == 204:  # a 2xx with no body: the intake, not the fetcher, refuses the empty image
        assert fetch_image(f"http://{public.origin}/x", param=PARAM, policy=_policy(public))[0] == b""
        return
    rejected = _refused(f"http://{public.origin}/x", _policy(public))
    assert "secret" not in rejected.message


def test_compressed_bodies_are_refused(serve):
    public = serve({"/gz": lambda h: _send(h, 200, b"\x1f\x8b" + b"\x00" * 20, Content_Encoding="gzip")})
    _refused(f"http://{public.origin}/gz", _policy(public))


def test_refusals_log_a_reason_and_never_the_url(caplog, canary):
    with caplog.at_level("INFO", logger="darkroom"):
        _refused(f"http://127.0.0.1:{canary.port}/secret-path", _policy(ports=frozenset({80, 443, canary.port})))
    records = [r for r in caplog.records if r.name == "darkroom"]
    assert [(r.levelname, r.getMessage(), r.fetch_reason) for r in records] == [
        ("INFO", "image url refused", "address")
    ]
    logged = repr([r.__dict__ for r in records])
    assert "secret-path" not in logged and "127.0.0.1" not in logged


def test_the_policy_only_allows_http_and_https():
    with pytest.raises(ValueError):
        FetchPolicy(max_bytes=1, schemes=frozenset({"http", "file"}))


# -- the intake --------------------------------------------------------------------------------------

LIMITS = IntakeLimits(max_image_bytes=256 * 1024)


def test_read_reference_fetches_with_a_fetcher_and_the_bytes_decide(serve):
    public = serve(
        {
            "/lies.jpg": lambda h: _send(h, 200, PNG, Content_Type="image/jpeg"),
            "/page": lambda h: _send(h, 200, b"<html>hi</html>", Content_Type="image/png"),
        }
    )
    fetcher = fetcher_from_settings(Settings(fetch_test_allowlist=f" {public.origin} ,"), LIMITS.max_image_bytes)
    image = intake.read_reference(
        {"image_url": f"http://{public.origin}/lies.jpg"},
        param="images[0]",
        tenant_id="t",
        files=None,
        limits=LIMITS,
        fetcher=fetcher,
    )
    assert (image.format, image.size) == ("png", (32, 24))
    with pytest.raises(ImageRejected) as error:
        intake.read_reference(
            {"image_url": f"http://{public.origin}/page"},
            param="images[0]",
            tenant_id="t",
            files=None,
            limits=LIMITS,
            fetcher=fetcher,
        )
    assert (error.value.code, error.value.param) == ("unsupported_image_format", "images[0].image_url")


def test_read_reference_without_a_fetcher_still_refuses_urls(canary):
    with pytest.raises(ImageRejected) as error:
        intake.read_reference(
            {"image_url": f"http://{canary.origin}/x.png"}, param="images[0]", tenant_id="t", files=None, limits=LIMITS
        )
    assert error.value.code == "unsupported_image_url"
    assert canary.connections == 0


def test_the_default_settings_allow_nothing(canary):
    assert Settings().fetch_test_allowlist == ""
    fetcher = fetcher_from_settings(Settings(), LIMITS.max_image_bytes)
    with pytest.raises(ImageRejected) as error:
        intake.read_reference(
            {"image_url": f"http://{canary.origin}/x.png"},
            param="images[0]",
            tenant_id="t",
            files=None,
            limits=LIMITS,
            fetcher=fetcher,
        )
    assert (error.value.code, error.value.param) == ("invalid_image_url", "images[0].image_url")
    assert canary.connections == 0


def test_the_module_keeps_one_neutral_message():
    assert fetch.UNREACHABLE_MESSAGE == "The image URL could not be fetched."
