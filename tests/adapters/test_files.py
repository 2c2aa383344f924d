"""darkroom.files against moto: tenant files in S3 (no table), presigned-POST uploads, the intake in front."""

import hashlib
import io
import re
from urllib.parse import unquote

import pytest
from PIL import Image

from darkroom.api.errors import InvalidRequest, NotFound
from darkroom.files import FILE_ID, FileStore, clean_filename, encode_filename, file_key, upload_key
from darkroom.intake import ImageRejected

TENANT = "tnt_aaaaaaaaaaaaaaaa"
OTHER = "tnt_bbbbbbbbbbbbbbbb"


def picture(fmt: str = "PNG", size=(40, 30), **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.fixture
def files(svc):
    return svc.files


@pytest.fixture
def s3(svc):
    return svc.files._s3


def keys(s3, bucket) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.fixture
def bucket(svc):
    return svc.settings.images_bucket


def test_create_get_read_delete(files, s3, bucket):
    data = picture()
    created = files.create(TENANT, "photos/holiday.png", "vision", data)
    assert FILE_ID.fullmatch(created.id)
    assert (created.object, created.bytes, created.filename, created.purpose, created.status) == (
        "file",
        len(data),
        "holiday.png",
        "vision",
        "processed",
    )
    assert (created.format, created.width, created.height) == ("png", 40, 30)
    head = s3.head_object(Bucket=bucket, Key=file_key(TENANT, created.id))
    assert head["ContentType"] == "image/png" and head["ServerSideEncryption"] == "AES256"
    assert files.get(TENANT, created.id) == created
    assert files.read(TENANT, created.id, param="images[0].file_id") == data
    assert files.delete(TENANT, created.id) == {"id": created.id, "object": "file", "deleted": True}
    with pytest.raises(NotFound) as missing:
        files.get(TENANT, created.id)
    assert (missing.value.status, missing.value.param, missing.value.code) == (404, "file_id", "file_not_found")
    with pytest.raises(NotFound):
        files.delete(TENANT, created.id)
    assert keys(s3, bucket) == []


@pytest.mark.parametrize("fmt,save,expected", [("JPEG", {}, "jpeg"), ("WEBP", {}, "webp"), ("GIF", {}, "gif")])
def test_every_still_image_format_is_kept_with_a_server_chosen_type(files, s3, bucket, fmt, save, expected):
    created = files.create(TENANT, "x.bin", "user_data", picture(fmt, **save))
    assert created.format == expected
    assert s3.head_object(Bucket=bucket, Key=file_key(TENANT, created.id))["ContentType"] == f"image/{expected}"


def test_another_tenants_file_is_404(files):
    created = files.create(TENANT, "a.png", "vision", picture())
    with pytest.raises(NotFound):
        files.get(OTHER, created.id)
    with pytest.raises(NotFound) as missing:
        files.read(OTHER, created.id, param="mask.file_id")
    assert missing.value.param == "mask.file_id" and missing.value.code == "file_not_found"
    with pytest.raises(NotFound):
        files.delete(OTHER, created.id)
    assert files.get(TENANT, created.id).id == created.id  # still there
    assert files.list(OTHER).data == []


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "file-",
        "file-XYZ",
        "file-0123456789abcdef0123456",
        "../file-0123456789abcdef012345",
        "file-0123456789abcdef01234567/../x",
        "file-0123456789ABCDEF01234567",
        "x" * 5000,
        "file-0123456789abcdef01234567\n",
    ],
)
def test_malformed_ids_are_404_without_touching_s3(bad):
    class NoS3:
        def __getattr__(self, name):
            raise AssertionError(f"S3 called: {name}")

    store = FileStore(NoS3(), "bucket", 3600)
    for call in (
        lambda: store.get(TENANT, bad),
        lambda: store.delete(TENANT, bad),
        lambda: store.read(TENANT, bad, param="images[0].file_id"),
    ):
        with pytest.raises(NotFound) as missing:
            call()
        assert bad not in missing.value.message or not bad
    with pytest.raises(NotFound) as missing:
        store.complete_upload(TENANT, bad)
    assert missing.value.code == "upload_not_found"


HOSTILE = {
    "not an image": (b"hello, this is text", "unsupported_image_format"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "unsupported_image_format"),
    "truncated png": (picture()[:60], "invalid_image"),
    "png magic, junk after": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "invalid_image"),
    "empty": (b"", "unsupported_image_format"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_non_images_and_hostile_bytes_are_refused_and_nothing_is_stored(files, s3, bucket, case):
    data, code = HOSTILE[case]
    with pytest.raises(ImageRejected) as refused:
        files.create(TENANT, "evil.png", "vision", data)
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, "file", code)
    assert keys(s3, bucket) == []


def test_animated_gif_and_oversize_are_refused(files, s3, bucket):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageRejected) as refused:
        files.create(TENANT, "a.gif", "vision", buffer.getvalue())
    assert refused.value.code == "invalid_image"
    small = FileStore(s3, bucket, 3600, max_bytes=1024, max_pixels=100)
    with pytest.raises(ImageRejected) as refused:
        small.create(TENANT, "big.png", "vision", picture(size=(20, 20)))
    assert refused.value.code == "image_too_large"
    assert keys(s3, bucket) == []


def test_purpose_must_be_vision_or_user_data(files):
    for purpose in ("assistants", "fine-tune", "", "VISION"):
        with pytest.raises(InvalidRequest) as refused:
            files.create(TENANT, "a.png", purpose, picture())
        assert (refused.value.param, refused.value.code) == ("purpose", "invalid_value")


def test_filenames_are_sanitized_to_ascii_metadata_and_capped(files, s3, bucket):
    name = "C:\\Users\\zoë\\Bilder\\été 🌅 photo\r\nX-Injected: 1.png"
    created = files.create(TENANT, name, "vision", picture())
    assert created.filename == "été 🌅 photoX-Injected: 1.png"
    stored = s3.head_object(Bucket=bucket, Key=file_key(TENANT, created.id))["Metadata"]["filename"]
    assert stored.isascii() and unquote(stored) == created.filename
    long = files.create(TENANT, "🌅" * 400, "vision", picture())
    assert len(encode_filename(long.filename)) <= 1024 and set(long.filename) == {"🌅"}
    assert clean_filename("../../etc/passwd") == "passwd"
    unnamed = files.create(TENANT, None, "vision", picture("JPEG"))
    assert unnamed.filename == f"{unnamed.id}.jpg"


def test_read_is_bounded(files, s3, bucket):
    created = files.create(TENANT, "a.png", "vision", picture())
    small = FileStore(s3, bucket, 3600, max_bytes=64)
    with pytest.raises(ImageRejected) as refused:
        small.read(TENANT, created.id, param="images[1].file_id")
    assert (refused.value.param, refused.value.code) == ("images[1].file_id", "image_too_large")


def test_list_pages_by_id(files):
    created = sorted(files.create(TENANT, f"{i}.png", "vision", picture()).id for i in range(5))
    files.create(OTHER, "other.png", "vision", picture())
    page = files.list(TENANT, limit=3)
    assert [f.id for f in page.data] == created[:3] and page.has_more
    assert (page.first_id, page.last_id) == (created[0], created[2])
    rest = files.list(TENANT, limit=3, after=page.last_id)
    assert [f.id for f in rest.data] == created[3:] and not rest.has_more
    with pytest.raises(InvalidRequest) as refused:
        files.list(TENANT, after="../x")
    assert refused.value.param == "after"


def _stage(s3, bucket, upload, data: bytes) -> None:
    """What S3 does with the presigned POST (moto in-process is not reachable over HTTP; e2e does the real POST)."""
    fields = upload.upload_url.fields
    metadata = {k.removeprefix("x-amz-meta-"): v for k, v in fields.items() if k.startswith("x-amz-meta-")}
    s3.put_object(Bucket=bucket, Key=fields["key"], Body=data, Metadata=metadata)


def test_upload_flow(files, s3, bucket):
    data = picture("WEBP", size=(64, 48))
    upload = files.create_upload(
        TENANT, filename="big/scan.webp", purpose="user_data", size=len(data), mime_type="image/webp"
    )
    assert re.match(r"^upload_[0-9a-f]{24}$", upload.id) and upload.status == "pending" and upload.file is None
    assert upload.expires_at - upload.created_at == 3600 and upload.filename == "scan.webp"
    fields = upload.upload_url.fields
    assert fields["key"] == upload_key(TENANT, upload.id)
    assert fields["x-amz-meta-purpose"] == "user_data" and fields["x-amz-meta-bytes"] == str(len(data))
    assert {"policy", "x-amz-signature", "x-amz-credential"} <= set(fields)
    _stage(s3, bucket, upload, data)
    done = files.complete_upload(TENANT, upload.id, md5=hashlib.md5(data, usedforsecurity=False).hexdigest())
    assert done.status == "completed" and done.id == upload.id and done.bytes == len(data)
    assert done.file.id == "file-" + upload.id.removeprefix("upload_")
    assert (done.file.filename, done.file.purpose, done.file.format, done.file.width) == (
        "scan.webp",
        "user_data",
        "webp",
        64,
    )
    assert files.read(TENANT, done.file.id, param="file_id") == data
    assert keys(s3, bucket) == [file_key(TENANT, done.file.id)]  # the staged object is gone
    with pytest.raises(NotFound) as again:
        files.complete_upload(TENANT, upload.id)
    assert again.value.code == "upload_not_found"


def test_upload_limits_and_refusals(files, s3, bucket):
    with pytest.raises(InvalidRequest) as refused:
        files.create_upload(TENANT, filename="a.png", purpose="vision", size=files.max_bytes + 1, mime_type="image/png")
    assert (refused.value.param, refused.value.code) == ("bytes", "file_too_large")
    with pytest.raises(InvalidRequest) as refused:
        files.create_upload(TENANT, filename="a.png", purpose="batch", size=10, mime_type="image/png")
    assert refused.value.param == "purpose"

    data = picture()
    never = files.create_upload(TENANT, filename="a.png", purpose="vision", size=len(data), mime_type="image/png")
    with pytest.raises(NotFound):
        files.complete_upload(TENANT, never.id)  # nothing was uploaded

    theirs = files.create_upload(TENANT, filename="a.png", purpose="vision", size=len(data), mime_type="image/png")
    _stage(s3, bucket, theirs, data)
    with pytest.raises(NotFound):
        files.complete_upload(OTHER, theirs.id)

    short = files.create_upload(TENANT, filename="a.png", purpose="vision", size=len(data) + 5, mime_type="image/png")
    _stage(s3, bucket, short, data)
    with pytest.raises(InvalidRequest) as refused:
        files.complete_upload(TENANT, short.id)
    assert (refused.value.param, refused.value.code) == ("bytes", "upload_size_mismatch")

    with pytest.raises(InvalidRequest) as refused:
        files.complete_upload(TENANT, theirs.id, md5="0" * 32)
    assert (refused.value.param, refused.value.code) == ("md5", "md5_mismatch")

    text = files.create_upload(TENANT, filename="a.png", purpose="vision", size=11, mime_type="image/png")
    _stage(s3, bucket, text, b"not a png!!")
    with pytest.raises(ImageRejected) as refused:
        files.complete_upload(TENANT, text.id)
    assert (refused.value.param, refused.value.code) == ("file", "unsupported_image_format")
    assert not any("/files/" in k for k in keys(s3, bucket))  # no refused upload became a file


def test_complete_refuses_oversize_staged_objects_before_reading(files, s3, bucket, monkeypatch):
    small = FileStore(s3, bucket, 3600, max_bytes=2048)
    data = picture("BMP", size=(40, 40))  # ~4.8 KB: larger than this store's cap
    upload = files.create_upload(TENANT, filename="a.png", purpose="vision", size=len(data), mime_type="image/png")
    _stage(s3, bucket, upload, data)
    monkeypatch.setattr(s3, "get_object", lambda **kw: pytest.fail("read an oversize staged object"))
    with pytest.raises(InvalidRequest) as refused:
        small.complete_upload(TENANT, upload.id)
    assert (refused.value.param, refused.value.code) == ("bytes", "file_too_large")
