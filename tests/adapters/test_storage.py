"""The S3 side of the image store (the use cases' ImageStorage port): what an object is stored as, and the
URL it leaves by. moto stands in for S3; the use cases' own tests run on tests/fakes.py."""

from urllib.parse import parse_qs, urlsplit

from darkroom.storage import image_key


def test_images_are_stored_encrypted_with_their_type_and_leave_by_a_short_lived_sigv4_url(svc):
    key = image_key("tnt_0123456789abcdef", "req-1", 0, "jpeg")
    assert key.startswith("tenants/tnt_0123456789abcdef/images/") and key.endswith("/req-1/0.jpg")
    svc.store.put(key, b"\xff\xd8jpeg bytes", "jpeg")
    head = svc.store._s3.head_object(Bucket=svc.settings.images_bucket, Key=key)
    assert (head["ContentType"], head["ServerSideEncryption"]) == ("image/jpeg", "AES256")
    assert svc.store.get(key) == b"\xff\xd8jpeg bytes"
    query = parse_qs(urlsplit(svc.store.presign(key, "jpeg")).query)
    assert query["X-Amz-Expires"] == [str(svc.settings.presign_seconds)] and "X-Amz-Signature" in query
    assert query["response-content-type"] == ["image/jpeg"]
    assert query["response-content-disposition"] == ['inline; filename="0.jpg"']
    svc.store.delete(key)
    assert "Contents" not in svc.store._s3.list_objects_v2(Bucket=svc.settings.images_bucket)
