"""darkroom.api.form_parser.parse_form: every part's bytes as sent, as python-multipart's FormParser reads them."""

import base64
import random

import httpx
import pytest
from python_multipart.multipart import FormParser

from darkroom.api.errors import InvalidRequest
from darkroom.api.form_parser import parse_form
from darkroom.api.http import HttpRequest
from darkroom.api.multipart import FilePart, Form

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _reference(content_type: str, body: bytes) -> Form:
    """The same body read by python-multipart's own FormParser (parts in memory)."""
    form = Form()

    def on_field(part) -> None:
        name = part.field_name.decode("utf-8", "replace")
        form.fields.setdefault(name, []).append((part.value or b"").decode("utf-8", "replace"))

    def on_file(part) -> None:
        part.file_object.seek(0)
        name = part.field_name.decode("utf-8", "replace")
        filename = part.file_name.decode("utf-8", "replace") if part.file_name else None
        form.files.setdefault(name, []).append(FilePart(name, filename, part.content_type, part.file_object.read()))

    parser = FormParser(
        "multipart/form-data",
        on_field,
        on_file,
        boundary=BOUNDARY.encode(),
        config={"MAX_MEMORY_FILE_SIZE": float("inf")},
    )
    parser.write(body)
    parser.finalize()
    return form


def _body(*parts: tuple[dict[str, str], bytes]) -> bytes:
    out = b""
    for headers, data in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        out += b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items()) + b"\r\n" + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def _noise(size: int, seed: int) -> bytes:
    """Random bytes sprinkled with near-boundaries (a prefix of the delimiter) the parser must read past."""
    rng = random.Random(seed)  # noqa: S311 - test data, not security
    data = bytearray(rng.randbytes(size))
    for _ in range(200):
        at = rng.randrange(size - 16)
        data[at : at + 12] = (b"\r\n--" + BOUNDARY.encode())[: rng.randrange(1, 12)].ljust(12, b"x")
    return bytes(data)


def test_large_file_parts_come_back_byte_for_byte_in_order():
    image, mask, extra = _noise(3_000_000, 1), _noise(700_000, 2), _noise(50_000, 3)
    sent = httpx.Request(
        "POST",
        "http://x/",
        files=[("image[]", ("a.png", image, "image/png")), ("image[]", ("b.png", extra, None)), ("mask", ("m", mask))],
        data={"prompt": "a cat", "n": "2"},
    )
    form = parse_form(sent.headers["content-type"], sent.read())
    assert form.fields == {"prompt": ["a cat"], "n": ["2"]}
    assert [(p.filename, p.data) for p in form.files["image[]"]] == [("a.png", image), ("b.png", extra)]
    assert form.files["mask"][0].data == mask and isinstance(form.files["mask"][0].data, bytes)


@pytest.mark.parametrize(
    "body",
    [
        _body(({"Content-Disposition": 'form-data; name="prompt"'}, b"p\r\n-x")),
        _body(
            ({"Content-Disposition": 'form-data; name="image"; filename="a.png"', "Content-Type": "image/png"}, b""),
            ({"Content-Disposition": 'form-data; name="image"; filename=""'}, _noise(5000, 4)),
        ),
        _body(
            (
                {"Content-Disposition": 'form-data; name="image"; filename="a"', "Content-Transfer-Encoding": "base64"},
                base64.b64encode(_noise(3000, 5)),
            ),
            (
                {"Content-Disposition": 'form-data; name="note"', "Content-Transfer-Encoding": "Quoted-Printable"},
                b"caf=C3=A9 =\r\nsoft break",
            ),
            ({"Content-Disposition": 'form-data; name="x"', "Content-Transfer-Encoding": "x-unknown"}, b"as is"),
        ),
    ],
)
def test_every_part_reads_as_form_parser_reads_it(body):
    assert parse_form(CONTENT_TYPE, body) == _reference(CONTENT_TYPE, body)


@pytest.mark.parametrize(
    "body",
    [
        _body(({"Content-Disposition": 'form-data; filename="a.png"'}, b"no name")),
        _body(({"Content-Disposition": 'form-data; name="image"; filename="a.png"'}, _noise(5000, 6)))[:-20],
        _body(
            ({"Content-Disposition": 'form-data; name="a"; filename="a"', "Content-Transfer-Encoding": "base64"}, b"!!")
        ),
    ],
    ids=["unnamed", "truncated", "bad-base64"],
)
def test_a_malformed_body_is_invalid_multipart(body):
    with pytest.raises(InvalidRequest) as raised:
        parse_form(CONTENT_TYPE, body)
    assert (raised.value.status, raised.value.code) == (400, "invalid_multipart")


def test_the_body_still_reads_after_its_form():
    sent = httpx.Request("POST", "http://x/", files=[("image", ("a.png", _noise(100_000, 7), "image/png"))])
    raw = sent.read()
    request = HttpRequest.from_event(
        {
            "headers": {"Content-Type": sent.headers["content-type"]},
            "body": base64.b64encode(raw).decode(),
            "isBase64Encoded": True,
        }
    )
    assert request.form.files["image"][0].data == raw[raw.index(b"\r\n\r\n") + 4 : raw.rindex(b"\r\n--")]
    assert request.body == raw and request.size == len(raw)


def test_a_boundary_the_parser_refuses_is_invalid_multipart_not_a_500():
    boundary = "b" * 300  # python-multipart refuses boundaries past 256 bytes when the parser is built
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\np\r\n--{boundary}--\r\n'.encode()
    with pytest.raises(InvalidRequest) as raised:
        parse_form(f"multipart/form-data; boundary={boundary}", body)
    assert (raised.value.status, raised.value.code) == (400, "invalid_multipart")
