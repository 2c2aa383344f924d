"""Image edits through the real openai SDK (multipart, as it sends them) and the JSON form."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image, ImageChops

pytestmark = pytest.mark.e2e


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _decoded(item) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item.b64_json))).convert("RGB")


PHOTO = Image.effect_noise((192, 128), 70).convert("RGB")
MASK = Image.new("RGBA", PHOTO.size, (0, 0, 0, 255))
MASK.paste((0, 0, 0, 0), (48, 32, 144, 96))


def test_edit_with_a_mask_changes_only_the_masked_area(client, tmp_path):
    (tmp_path / "photo.png").write_bytes(_png(PHOTO))
    (tmp_path / "mask.png").write_bytes(_png(MASK))
    with open(tmp_path / "photo.png", "rb") as image, open(tmp_path / "mask.png", "rb") as mask:
        result = client.images.edit(model="local-image", image=image, mask=mask, prompt="a red balloon")
    edited = _decoded(result.data[0])
    assert edited.size == PHOTO.size and result.size == "192x128"
    difference = ImageChops.difference(edited, PHOTO)
    assert difference.crop((48, 32, 144, 96)).getbbox() is not None
    outside = difference.copy()
    outside.paste((0, 0, 0), (48, 32, 144, 96))
    assert outside.getbbox() is None
    assert result.usage.input_tokens_details.image_tokens > 0


def test_edit_with_a_list_of_images_and_raw_bytes_without_a_type(client):
    # Raw bytes: the SDK sends filename "upload" and application/octet-stream; the bytes decide.
    result = client.images.edit(
        model="local-image",
        image=[_png(PHOTO), _png(PHOTO.rotate(90, expand=True))],
        prompt="combine them",
        n=2,
        output_format="jpeg",
        size="512x512",
    )
    assert len(result.data) == 2 and result.output_format == "jpeg"
    assert {_decoded(item).size for item in result.data} == {(512, 512)}


def test_json_form_with_a_data_url(tenant, base_url):
    url = "data:image/png;base64," + base64.b64encode(_png(PHOTO)).decode()
    response = httpx.post(
        f"{base_url}/images/edits",
        headers=tenant.headers(),
        timeout=60,
        json={"model": "local-image", "prompt": "x", "images": [{"image_url": url}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["size"] == "192x128"


def test_hostile_uploads_are_400s_with_codes(client):
    frames = [Image.new("RGB", (32, 32), (60 * i, 0, 0)) for i in range(3)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:])
    bomb = _png(Image.new("L", (8000, 6000)))  # 48 Mpx of zeros in a few KB
    cases = [
        (("a.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/png"), "unsupported_image_format"),
        (("a.gif", animated.getvalue(), "image/gif"), "unsupported_image_format"),
        (("bomb.png", bomb, "image/png"), "image_too_large"),
        (("cut.png", _png(PHOTO)[:500], "image/png"), "invalid_image"),
    ]
    for upload, code in cases:
        with pytest.raises(openai.BadRequestError) as error:
            client.images.edit(model="local-image", image=upload, prompt="x")
        assert error.value.body["code"] == code and error.value.body["param"] == "image", upload[0]


def test_a_mask_of_the_wrong_size_is_named(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.edit(
            model="local-image",
            image=("a.png", _png(PHOTO), "image/png"),
            mask=("m.png", _png(MASK.resize((10, 10))), "image/png"),
            prompt="x",
        )
    assert error.value.body["param"] == "mask" and "same size" in error.value.body["message"]


def test_json_form_with_a_file_id_from_the_files_api(client, tenant, base_url, make_tenant):
    uploaded = client.files.create(file=("photo.png", _png(PHOTO), "image/png"), purpose="vision")
    response = httpx.post(
        f"{base_url}/images/edits",
        headers=tenant.headers(),
        timeout=60,
        json={
            "prompt": "x",
            "images": [{"file_id": uploaded.id}],
            "mask": {"image_url": "data:image/png;base64," + base64.b64encode(_png(MASK)).decode()},
        },
    )
    assert response.status_code == 200, response.text
    edited = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"]))).convert("RGB")
    assert ImageChops.difference(edited, PHOTO).crop((0, 0, 48, 128)).getbbox() is None  # outside the mask
    # Another tenant cannot use the file id.
    other = make_tenant()
    response = httpx.post(
        f"{base_url}/images/edits",
        headers=other.headers(),
        timeout=60,
        json={"prompt": "x", "images": [{"file_id": uploaded.id}]},
    )
    assert response.status_code == 404 and response.json()["error"]["param"] == "images[0].file_id"
