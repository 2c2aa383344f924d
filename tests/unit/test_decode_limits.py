"""One decode budget per request and bounded decode work, against the hostile corpus (tests/hostile_images.py).

Each refusal is timed and its peak resident memory measured: it must come before any pixel is decoded."""

from __future__ import annotations

import io
import zlib
from unittest import mock

import pytest
from PIL import Image

import hostile_images as hostile
from darkroom import config, decode_work, intake
from darkroom.inference.aws_runtime import Outcome, decode_images
from darkroom.intake import DecodeBudget, ImageRejected, IntakeLimits, open_image, read_header
from memory_probe import peak_growth

MIB = 1024 * 1024
EDIT = IntakeLimits()  # the edit function's defaults: 40 M pixels, 12,000 a side
GIF = IntakeLimits(formats=frozenset({"gif"}))


def _refused(data: bytes, code: str, limits: IntakeLimits = EDIT, param: str = "image") -> tuple[bool, int]:
    """(whether Pillow opened the file, peak resident growth) of the refusal, asserting its code and param.

    Times are measured by benchmarks/bench_decode_limits.py, not asserted here: what a test can hold
    to is that the work was never started."""
    caught: list[ImageRejected] = []
    opened: list[int] = []
    pillow_open = intake.Image.open

    def attempt() -> None:
        try:
            open_image(data, param=param, limits=limits)
        except ImageRejected as error:
            caught.append(error)

    def counting_open(*args, **kwargs):
        opened.append(1)
        return pillow_open(*args, **kwargs)

    with mock.patch.object(intake.Image, "open", counting_open):
        growth = peak_growth(attempt)
    assert caught, "accepted"
    assert (caught[0].status, caught[0].code, caught[0].param) == (400, code, param), caught[0].message
    return bool(opened), growth


@pytest.fixture(scope="module")
def sixteen_pngs() -> list[bytes]:
    png = hostile.zero_rgba_png()  # 6324 x 6324, just under the 40 M pixel limit, about 155 KB
    assert len(png) < 160_000
    return [png] * 16


# -- decode work --------------------------------------------------------------------------------------------


def test_the_5000_scan_progressive_jpeg_is_refused_before_pillow_sees_it():
    """86 KB, 2000 x 2000: 12 s of CPU on Lambda when decoded; refused from its marker segments."""
    data = hostile.progressive_jpeg(2000, 5000)
    assert len(data) < 100_000 and data.count(hostile.SOS) == 5000  # no FF DA inside entropy-coded data
    assert decode_work.jpeg_scans(data) == decode_work.MAX_JPEG_SCANS + 1  # the walk stops one past the limit
    opened, growth = _refused(data, "invalid_image")
    assert not opened and growth < 8 * MIB


def test_the_6000_px_20000_scan_jpeg_is_refused_before_pillow_sees_it():
    data = hostile.progressive_jpeg(6000, 20_000)  # 1.4 MB
    opened, growth = _refused(data, "invalid_image")
    assert not opened and growth < 8 * MIB


def test_normal_jpegs_are_walked_to_the_scans_their_encoders_wrote_and_decode():
    assert decode_work.jpeg_scans(hostile.photo_jpeg(256, progressive=False)) == 1
    progressive = hostile.photo_jpeg(512)
    assert decode_work.jpeg_scans(progressive) == 10  # libjpeg's script for YCbCr
    buffer = io.BytesIO()  # restart markers (FF D0-D7) and stuffed bytes (FF 00) inside the scans
    Image.effect_noise((512, 512), 80).convert("RGB").save(
        buffer, format="JPEG", progressive=True, restart_marker_blocks=1
    )
    restarted = buffer.getvalue()
    assert restarted.count(b"\xff\xd0") > 100 and decode_work.jpeg_scans(restarted) == 10
    for data in (progressive, restarted):
        assert open_image(data, param="image", limits=EDIT).size == (512, 512)


def test_the_scan_limit_is_exact():
    assert open_image(hostile.progressive_jpeg(64, decode_work.MAX_JPEG_SCANS), param="image", limits=EDIT)
    _refused(hostile.progressive_jpeg(64, decode_work.MAX_JPEG_SCANS + 1), "invalid_image")


@pytest.mark.parametrize(
    "name,data",
    [
        ("segments before the first scan", hostile.jpeg_with_segments(decode_work.MAX_JPEG_HEADER_SEGMENTS + 1)),
        ("fill bytes", hostile.jpeg_with_segments(0)[:2] + b"\xff" * 2000 + hostile.jpeg_with_segments(0)[2:]),
        ("Photoshop segments", hostile.jpeg_with_segments(9, 0xED, b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00" * 8)),
    ],
)
def test_jpeg_headers_pillow_would_parse_in_python_are_bounded(name, data):
    _refused(data, "invalid_image")


def test_a_few_segments_and_padding_bytes_are_normal():
    data = hostile.jpeg_with_segments(40)
    assert open_image(data[:2] + b"\xff" * 16 + data[2:], param="image", limits=EDIT).size == (64, 64)


def test_png_iccp_bombs_are_refused():
    """Pillow inflates every iCCP chunk (up to 1 MiB each): 2,000 of them, 2 MB, took 4 s."""
    assert open_image(hostile.iccp_bomb(1), param="image", limits=EDIT).size == (8, 8)
    opened, _ = _refused(hostile.iccp_bomb(2000), "invalid_image")
    assert not opened


def test_png_chunk_counts_are_bounded_by_the_file_size():
    allowed = decode_work.PNG_CHUNKS_PER_FILE - 8  # ~12 bytes a chunk: the per-KiB allowance stays small
    assert open_image(hostile.png_with_chunks(allowed), param="image", limits=EDIT).size == (8, 8)
    opened, _ = _refused(hostile.png_with_chunks(100_000), "invalid_image")
    assert not opened


def test_png_text_is_bounded_by_pillows_text_memory():
    from PIL import PngImagePlugin

    assert PngImagePlugin.MAX_TEXT_MEMORY == 4 * MIB
    text = b"".join(hostile._chunk(b"zTXt", b"k%d\x00\x00" % i + zlib.compress(bytes(MIB - 16))) for i in range(5))
    _refused(hostile.png(8, colour_type=2, before_idat=text), "invalid_image")


def test_adam7_interlaced_pngs_decode():
    buffer = io.BytesIO()
    Image.new("RGBA", (300, 200), (1, 2, 3, 4)).save(buffer, format="PNG", interlace=1)
    assert open_image(buffer.getvalue(), param="image", limits=EDIT).size == (300, 200)


def test_gif_sub_blocks_are_bounded():
    assert open_image(hostile.gif_with_sub_blocks(500), param="image", limits=GIF).size == (64, 64)
    _refused(hostile.gif_with_sub_blocks(1_000_000), "invalid_image", limits=GIF)


def test_a_webp_canvas_is_checked_before_libwebp_allocates_it():
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="WEBP", lossless=True)
    small = buffer.getvalue()
    assert decode_work.webp_canvas(small) == (16, 16)
    vp8x = b"VP8X" + (10).to_bytes(4, "little") + b"\x00" * 4 + (11999).to_bytes(3, "little") * 2
    claimed = b"RIFF" + (4 + len(vp8x)).to_bytes(4, "little") + b"WEBP" + vp8x
    opened, growth = _refused(claimed, "image_too_large")
    assert not opened and growth < 8 * MIB


# -- the decode budget --------------------------------------------------------------------------------------


def test_the_budget_is_sized_from_the_functions_memory(monkeypatch):
    assert intake.budget_pixels(3008) == 3008 * MIB // 2 // 12 == 131_421_525
    assert intake.budget_pixels(1024) == 44_739_242 > IntakeLimits.max_pixels  # Edit, Responses: one largest image
    for value, expected in (("3008", 3008), ("", config.DEFAULT_FUNCTION_MEMORY_MB), ("x", 1024)):
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", value)
        config.function_memory_mb.cache_clear()
        assert DecodeBudget.for_function().pixels == intake.budget_pixels(expected)
    config.function_memory_mb.cache_clear()


def test_sixteen_40_mpx_pngs_are_refused_before_any_is_decoded(sixteen_pngs, monkeypatch):
    """The edit that peaked at 2,775 MB of EditFunction's 3,008: every header is read (and charged) first."""
    decoded = []
    monkeypatch.setattr(intake.ImageHeader, "decode", lambda header: decoded.append(header))
    caught = []

    def read_all() -> None:
        try:
            [read_header(png, param=f"image[{i}]", limits=EDIT) for i, png in enumerate(sixteen_pngs)]
        except ImageRejected as error:
            caught.append(error)

    with intake.request_decode_budget(DecodeBudget(intake.budget_pixels(3008))) as budget:
        growth = peak_growth(read_all)
    (error,) = caught
    assert (error.code, error.param) == ("images_too_large", "image[3]")  # 4 x 40 M > 131 M pixels
    assert budget.spent == 3 * 6324 * 6324 and decoded == []
    assert growth < 16 * MIB


def test_one_budget_is_shared_inside_a_request_and_fresh_outside():
    png = hostile.png(1000, colour_type=2)  # 1 M pixels
    with intake.request_decode_budget(DecodeBudget(2_500_000)):
        open_image(png, param="images[0]", limits=EDIT)
        header = read_header(png, param="images[1]", limits=EDIT)
        with pytest.raises(ImageRejected) as error:
            read_header(png, param="images[2]", limits=EDIT)
        assert (error.value.code, error.value.param) == ("images_too_large", "images[2]")
        assert header.decode().size == (1000, 1000)
        with pytest.raises(ImageRejected) as error:
            intake.request_budget().ensure_room(600_000, param="n")  # what an edit would produce
        assert error.value.param == "n"
    for i in range(3):  # outside a request: each image on its own
        open_image(png, param=f"images[{i}]", limits=EDIT)
    assert intake.request_budget().spent == 0


def test_upstream_answers_are_charged_to_the_same_budget():
    """A model's answers are untrusted input too: past the request's budget they are an invalid answer."""
    import base64

    answer = base64.b64encode(hostile.png(64, colour_type=2)).decode()
    with intake.request_decode_budget(DecodeBudget(64 * 64 * 3)):
        assert len(decode_images([answer, answer], 2, 64, 64, transparent=False)) == 2
        with pytest.raises(Outcome) as outcome:
            decode_images([answer, answer], 2, 64, 64, transparent=False)
    assert outcome.value.error.status == 502
