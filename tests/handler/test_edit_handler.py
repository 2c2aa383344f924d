"""EditFunction in-process with moto: both wire forms, mask semantics, and the intake's 400s."""

import base64
import io
import json

import httpx
import pytest
from PIL import Image, ImageChops

from lambda_harness import invoke, load_event


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _photo(size=(256, 256)) -> Image.Image:
    return Image.effect_noise(size, 60).convert("RGB")


def _mask(size=(256, 256), box=(64, 64, 192, 192)) -> Image.Image:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)  # transparent = edit here
    return mask


def _event(files=None, data=None, json_body=None) -> dict:
    if json_body is not None:
        request = httpx.Request("POST", "http://x/v1/images/edits", json=json_body)
        body, binary = request.read().decode(), False
    else:
        request = httpx.Request("POST", "http://x/v1/images/edits", files=files, data=data or {})
        body, binary = base64.b64encode(request.read()).decode(), True
    event = (
        load_event("edit")
        if files is not None
        else load_event("generate", path="/v1/images/edits", resource="/v1/images/edits")
    )
    content_type = request.headers["content-type"]
    event["headers"]["content-type"] = content_type
    event["multiValueHeaders"]["content-type"] = [content_type]
    event["body"], event["isBase64Encoded"] = body, binary
    return event


def _decoded(body: dict, index: int = 0) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(body["data"][index]["b64_json"])))


def test_replayed_event_edits_an_image(tenant):
    status, headers, body = invoke("edit", load_event("edit"))
    assert status == 200, body
    assert _decoded(body).size == (64, 64) and headers["x-request-id"]


def test_mask_limits_the_edit_to_its_transparent_pixels(tenant):
    photo = _photo()
    status, _, body = invoke(
        "edit",
        _event(
            files=[
                ("image", ("photo.png", _png(photo), "image/png")),
                ("mask", ("mask.png", _png(_mask()), "image/png")),
            ],
            data={"prompt": "a sun", "model": "local-image"},
        ),
    )
    assert status == 200, body
    edited = _decoded(body).convert("RGB")
    assert edited.size == photo.size and body["size"] == "256x256"
    outside = Image.new("L", photo.size, 255)
    outside.paste(0, (64, 64, 192, 192))
    difference = ImageChops.difference(edited, photo)
    assert ImageChops.multiply(difference.convert("L"), outside).getbbox() is None  # identical outside
    assert difference.crop((64, 64, 192, 192)).getbbox() is not None  # changed inside
    assert body["usage"]["input_tokens_details"]["image_tokens"] > 0


def test_without_a_mask_the_whole_image_changes_and_lists_of_images_work(tenant):
    photo = _photo((128, 96))
    files = [
        ("image[]", ("a.png", _png(photo), "image/png")),
        ("image[]", ("upload", _png(_photo((32, 32))), "application/octet-stream")),
    ]
    status, _, body = invoke("edit", _event(files=files, data={"prompt": "make it blue", "n": "2"}))
    assert status == 200, body
    assert len(body["data"]) == 2 and body["size"] == "128x96"
    assert ImageChops.difference(_decoded(body).convert("RGB"), photo).getbbox() == (0, 0, 128, 96)


def test_json_form_with_a_data_url(tenant):
    url = "data:image/png;base64," + base64.b64encode(_png(_photo((64, 64)))).decode()
    status, _, body = invoke(
        "edit",
        _event(json_body={"prompt": "x", "images": [{"image_url": url}], "size": "256x256", "output_format": "webp"}),
    )
    assert status == 200, body
    assert _decoded(body).format == "WEBP" and _decoded(body).size == (256, 256)


def test_output_carries_no_metadata_from_the_input(tenant):
    photo = _photo((64, 64))
    exif = Image.Exif()
    exif[0x010F] = "SecretCameraMaker"
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif)
    polyglot = buffer.getvalue() + b"<html><script>alert(1)</script></html>"
    status, _, body = invoke(
        "edit",
        _event(files=[("image", ("p.jpg", polyglot, "image/jpeg"))], data={"prompt": "x", "output_format": "jpeg"}),
    )
    assert status == 200, body
    raw = base64.b64decode(body["data"][0]["b64_json"])
    assert b"SecretCameraMaker" not in raw and b"<script>" not in raw and b"Exif" not in raw


@pytest.mark.parametrize(
    "files,data,param,code",
    [
        ([("image", ("a.txt", b"not an image", "image/png"))], {}, "image", "unsupported_image_format"),
        ([("image", ("a.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png"))], {}, "image", "invalid_image"),
        ([("image", ("a.png", b"<svg/>", "image/svg+xml"))], {}, "image", "unsupported_image_format"),
        (
            [
                ("image", ("a.png", _png(_photo((64, 64))), "image/png")),
                ("mask", ("m.png", _png(_mask((32, 32), (0, 0, 8, 8))), "image/png")),
            ],
            {},
            "mask",
            "invalid_mask",
        ),
        (
            [("image", ("a.png", _png(_photo((64, 64))), "image/png"))],
            {"model": "local-vision"},
            "model",
            "model_not_supported",
        ),
        ([("image", ("a.png", _png(_photo((64, 64))), "image/png"))], {"n": "lots"}, "n", "invalid_type"),
        ([("image", ("a.png", _png(_photo((64, 64))), "image/png"))], {"style": "vivid"}, "style", "unknown_parameter"),
        ([("image", ("a.png", _png(_photo((64, 64))), "image/png"))], {"image[]": "text"}, "image[]", "invalid_type"),
        ([("other", ("a.png", _png(_photo((64, 64))), "image/png"))], {}, "other", "unknown_parameter"),
        ([("mask", ("m.png", _png(_mask()), "image/png"))], {}, "image", "missing_required_parameter"),
        ([("image[]", ("a.png", _png(_photo((16, 16))), "image/png"))] * 17, {}, "image", "too_many_images"),
    ],
)
def test_bad_edits_are_400_naming_the_parameter(tenant, files, data, param, code):
    status, _, body = invoke("edit", _event(files=files, data={"prompt": "x", **data}))
    assert status == 400, body
    assert (body["error"]["param"], body["error"]["code"]) == (param, code)


def test_json_form_errors(tenant):
    cases = [
        ({"prompt": "x"}, "images", "missing_required_parameter"),
        (
            {"prompt": "x", "images": [{"image_url": "http://127.0.0.1/a.png"}]},
            "images[0].image_url",
            "image_url_unreachable",
        ),  # fetched only from public addresses
        (
            {"prompt": "x", "images": [{"image_url": "data:image/png;base64,!!!!"}]},
            "images[0].image_url",
            "invalid_base64",
        ),
    ]
    for body, param, code in cases:
        status, _, answer = invoke("edit", _event(json_body=body))
        assert status == 400 and (answer["error"]["param"], answer["error"]["code"]) == (param, code), answer
    event = _event(json_body={"prompt": "x"})
    event["body"] = "{broken"
    status, _, answer = invoke("edit", event)
    assert status == 400 and answer["error"]["code"] == "invalid_json"


def test_a_refused_request_costs_no_decoding(tenant, svc, monkeypatch):
    """Admission comes before the images are decoded: a rate-limited tenant cannot make darkroom decode."""
    import darkroom.intake

    decoded = []
    monkeypatch.setattr(darkroom.intake, "read_header", lambda *a, **k: decoded.append(1))  # nor any header read
    svc.directory.set_status(tenant.tenant_id, "active")
    from darkroom.limits import RateLimiter

    limited = RateLimiter(svc.limiter._db, svc.settings.rate_limits_table)
    for _ in range(2):  # the fixture tenant allows 20 images a minute: use them up with n=10
        limited.admit(tenant, 10)
    status, _, body = invoke(
        "edit", _event(files=[("image", ("a.png", _png(_photo((64, 64))), "image/png"))], data={"prompt": "x"})
    )
    assert status == 429 and decoded == []


def test_usage_records_the_edit(tenant, svc):
    invoke("edit", load_event("edit"))
    (record,) = svc.meter.records(tenant.tenant_id)
    assert record["operation"] == "edit" and record["input_image_tokens"] > 0
    (day,) = svc.meter.daily(tenant.tenant_id)
    assert day.breakdown["operation#edit"] == 1
    assert json.dumps(record, default=str)  # plain data, no image bytes
    assert all(len(str(v)) < 200 for v in record.values())


def test_edit_logs_carry_no_prompt_filename_or_image(tenant, capsys, caplog):
    caplog.set_level("INFO")
    photo = _photo((64, 64))
    status, _, body = invoke(
        "edit",
        _event(files=[("image", ("SECRET-NAME.png", _png(photo), "image/png"))], data={"prompt": "SECRET-PROMPT"}),
    )
    assert status == 200
    streams = capsys.readouterr()
    text = streams.out + streams.err + "\n".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert "images produced" in text
    for leak in ("SECRET-NAME", "SECRET-PROMPT", body["data"][0]["b64_json"][:40], "X-Amz-Signature"):
        assert leak not in text


def test_size_auto_is_judged_against_the_time_budget_at_the_input_images_size(tenant, svc, monkeypatch):
    """Before admission "auto" can only be judged at the model's default size (1024x1024: 4 s at high quality);
    the work runs at the input's size (1536x1536: 9 s), over a 5 s budget: refused before any decoding."""
    monkeypatch.setattr(svc, "settings", svc.settings.model_copy(update={"inference_timeout_seconds": 5}))
    big = _png(Image.new("RGB", (1536, 1536), (20, 90, 160)))
    event = _event(
        files=[("image", ("big.png", big, "image/png"))],
        data={"prompt": "a boat", "model": "local-image", "quality": "high"},
    )
    status, _, body = invoke("edit", event)
    assert status == 400 and body["error"]["code"] == "use_background_mode", body
    assert "9 s" in body["error"]["message"]
    small = _png(Image.new("RGB", (1024, 1024), (20, 90, 160)))  # at the default size it fits
    status, _, body = invoke(
        "edit",
        _event(
            files=[("image", ("small.png", small, "image/png"))],
            data={"prompt": "a boat", "model": "local-image", "quality": "high"},
        ),
    )
    assert status == 200, body
