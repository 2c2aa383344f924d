"""Stability AI's models in the ``bedrock`` backend (families ``stability-image`` and ``stability-inpaint``),
against botocore's Stubber and the real ``bedrock-runtime`` service model.

Request and answer shapes come from AWS's Bedrock user guide:
  SD3.5 Large:  https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-3-5-large.html
  Ultra:        https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-stable-ultra-text-image-request-response.html
  Core:         https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-stable-image-core-text-image-request-response.html
  Inpaint:      https://docs.aws.amazon.com/bedrock/latest/userguide/stable-image-services.html (section "Inpaint")
"""

from __future__ import annotations

import io

import boto3
import pytest
from PIL import Image
from test_bedrock_backend import Capture, assert_neutral, image_reply

from backend_stubs import b64, decode_png, no_wait, png_of, stubbed
from darkroom.api.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import BEDROCK_FAMILY_CAPABILITIES
from darkroom.inference import EditJob, GenerateJob
from darkroom.inference.bedrock import BedrockBackend
from darkroom.inference.bedrock_stability import ASPECT_RATIOS, MAX_SEED
from darkroom.inference.resilience import CircuitBreaker, Resilience

SD35 = "stability.sd3-5-large-v1:0"  # the SD3.5 page's example modelId
ULTRA = "stability.stable-image-ultra-v1:1"  # the Ultra page's example modelId
INPAINT = "us.stability.stable-image-inpaint-v1:0"  # the Image Services page's Inpaint example model_id
NOVA = "amazon.nova-canvas-v1:0"
SECRET_DETAIL = "BEDROCK-INTERNAL-DETAIL-4b2d"
RED, BLUE, GREEN = (200, 30, 30), (20, 40, 220), (10, 200, 10)


def entry(model_id=SD35, family="stability-image", sizes=("1024x1024",)) -> ModelEntry:
    return ModelEntry.model_validate(
        {
            "id": "stability",
            "backend": "bedrock",
            "endpoint": {"model_id": model_id, "family": family, "timeout_seconds": 30},
            "capabilities": sorted(BEDROCK_FAMILY_CAPABILITIES[family]),
            "sizes": list(sizes),
            "default_size": sizes[0],
            "max_n": 10,
            "qualities": ["medium"],
            "default_quality": "medium",
            "passthrough": ["negative_prompt", "seed", "strength", "grow_mask", "style_preset", "cfg_scale"],
        }
    )


def answer(image: bytes) -> dict:
    """An answer as the pages show it: {'seeds': [2130420379], "finish_reasons": [null], "images": ["..."]}."""
    return image_reply({"seeds": [2130420379], "finish_reasons": [None], "images": [b64(image)]})


def halves(width: int, height: int, left=RED, right=BLUE) -> bytes:
    """A PNG whose left half is one colour and right half another (to see what resampling kept)."""
    image = Image.new("RGB", (width, height), right)
    image.paste(left, (0, 0, width // 2, height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def params(body, model_id=SD35) -> dict:
    return {"modelId": model_id, "body": body, "contentType": "application/json", "accept": "application/json"}


def gen_job(width=1024, height=1024, n=1, transparent=False, prompt="A car made out of vegetables.", **options):
    return GenerateJob(prompt, width, height, n, "medium", transparent, deadline_seconds=10, options=options)


def edit_job(mask=None, images=None, width=640, height=480, n=1, transparent=False, prompt="artificer", **options):
    return EditJob(
        prompt=prompt,
        images=images or [Image.new("RGB", (width, height), GREEN)],
        mask=mask,
        width=width,
        height=height,
        n=n,
        quality="medium",
        transparent=transparent,
        input_fidelity="low",
        deadline_seconds=10,
        options=options,
    )


@pytest.fixture
def client():
    return boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


@pytest.fixture
def stubber(client):
    with stubbed(client) as stub:
        yield stub


def backend_of(client, model, **kwargs) -> BedrockBackend:
    kwargs.setdefault("breaker", CircuitBreaker(threshold=100))
    kwargs.setdefault("resilience", no_wait())
    return BedrockBackend(model, client=client, **kwargs)


# -- generate: sizes map to the nine aspect ratios, answers come back at the job's size --------------------


@pytest.mark.parametrize(
    ("size", "ratio", "upstream"),
    [
        ((1024, 1024), "1:1", (1024, 1024)),
        ((1920, 1080), "16:9", (1344, 768)),  # an exact ratio; Stability answers at its own ~1 MP size
        ((1344, 768), "16:9", (1344, 768)),  # Stability's bucket is within 3% of 16:9
        ((768, 1344), "9:16", (768, 1344)),
        ((1536, 640), "21:9", (1536, 640)),
        ((640, 1536), "9:21", (640, 1536)),
        ((1216, 832), "3:2", (1216, 832)),
        ((832, 1216), "2:3", (832, 1216)),
        ((1280, 1024), "5:4", (1088, 896)),
        ((896, 1088), "4:5", (896, 1088)),
        ((512, 512), "1:1", (1024, 1024)),
    ],
)
def test_generate_sends_the_aspect_ratio_of_the_size_and_returns_the_size(client, stubber, size, ratio, upstream):
    width, height = size
    model = entry(sizes=(f"{width}x{height}",))
    # The SD3.5 page's text-to-image fields: prompt, aspect_ratio, output_format (png asked for).
    body = Capture({"prompt": "A car made out of vegetables.", "aspect_ratio": ratio, "output_format": "png"})
    stubber.add_response("invoke_model", answer(halves(*upstream)), params(body))
    (image,) = backend_of(client, model).generate(model, gen_job(width, height))
    assert image.image.size == size
    assert image.image.getpixel((width // 8, height // 2)) == RED  # resampled, not replaced or mirrored
    assert image.image.getpixel((width - width // 8, height // 2)) == BLUE


def test_negative_prompt_and_seed_pass_through(client, stubber):
    model = entry(ULTRA)
    body = Capture(
        {"prompt": "a lighthouse", "aspect_ratio": "1:1", "output_format": "png", "negative_prompt": "fog", "seed": 7}
    )
    stubber.add_response("invoke_model", answer(png_of(1024, 1024)), params(body, ULTRA))
    backend_of(client, model).generate(model, gen_job(prompt="a lighthouse", negative_prompt="fog", seed=7))


# -- n images are n calls, in order, within one deadline ---------------------------------------------------


def test_n_images_are_n_calls_with_consecutive_seeds(client, stubber):
    model = entry()
    bodies = [Capture(json_body=True) for _ in range(3)]
    for body, colour in zip(bodies, (RED, GREEN, BLUE), strict=True):
        stubber.add_response("invoke_model", answer(png_of(1024, 1024, colour)), params(body))
    images = backend_of(client, model).generate(model, gen_job(n=3, seed=42))
    assert [i.image.getpixel((0, 0)) for i in images] == [RED, GREEN, BLUE]
    assert [b.seen["seed"] for b in bodies] == [42, 43, 44]  # one seed each: n different, reproducible images


def test_without_a_seed_each_call_is_random_and_seeds_wrap_within_range(client, stubber):
    model = entry()
    plain = [Capture(json_body=True) for _ in range(2)]
    wrapped = [Capture(json_body=True) for _ in range(2)]
    for body in (*plain, *wrapped):
        stubber.add_response("invoke_model", answer(png_of(1024, 1024)), params(body))
    backend = backend_of(client, model)
    assert len(backend.generate(model, gen_job(n=2))) == 2
    assert ["seed" in b.seen for b in plain] == [False, False]
    backend.generate(model, gen_job(n=2, seed=MAX_SEED))
    assert [b.seen["seed"] for b in wrapped] == [MAX_SEED, 1]  # 0 would mean "random"


def test_a_further_call_is_not_started_when_the_slowest_would_not_fit(client, stubber):
    now = [0.0]
    client.meta.events.register(  # each InvokeModel takes 6 s of the job's 10 s
        "provide-client-params.bedrock-runtime.InvokeModel", lambda **_: now.__setitem__(0, now[0] + 6)
    )
    model = entry()
    stubber.add_response("invoke_model", answer(png_of(1024, 1024)), params(Capture(json_body=True)))
    backend = backend_of(client, model, resilience=Resilience(sleep=lambda _s: None, clock=lambda: now[0]))
    with pytest.raises(UpstreamTimeout) as caught:  # one call made (the stubber checks), the second not started
        backend.generate(model, gen_job(n=2))
    assert caught.value.status == 504
    assert backend.breaker.state == "closed"


# -- finish_reasons ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason", ["Filter reason: prompt", "Filter reason: output image", "Filter reason: input image"]
)
def test_a_filter_reason_is_400_content_policy(client, stubber, reason):
    model = entry()
    # The pages' filtered answer: {"finish_reasons": ["Filter reason: prompt"]} (no images).
    stubber.add_response("invoke_model", image_reply({"finish_reasons": [reason]}), params(Capture(json_body=True)))
    backend = backend_of(client, model)
    with pytest.raises(InvalidRequest) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 400 and caught.value.code == "content_policy_violation"
    assert reason not in caught.value.message
    assert backend.breaker.state == "closed"


def test_an_inference_error_is_502_and_counts_against_the_endpoint(client, stubber):
    model = entry()
    stubber.add_response(
        "invoke_model", image_reply({"finish_reasons": ["Inference error"]}), params(Capture(json_body=True))
    )
    backend = backend_of(client, model, breaker=CircuitBreaker(threshold=1))
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 502 and caught.value.code == "upstream_error"
    assert "Inference error" not in caught.value.message
    assert backend.breaker.state == "open"


@pytest.mark.parametrize(
    "document",
    [
        {"finish_reasons": "Filter reason: prompt", "images": []},
        {"finish_reasons": [None]},
        {"finish_reasons": [None], "images": [b64(png_of(64, 64))] * 2},
        {"finish_reasons": [None], "images": ["%%%"]},
    ],
    ids=["reasons-not-a-list", "no-images", "two-images", "junk"],
)
def test_malformed_answers_are_502_invalid_response(client, stubber, document):
    model = entry()
    stubber.add_response("invoke_model", image_reply(document), params(Capture(json_body=True)))
    with pytest.raises(UpstreamError) as caught:
        backend_of(client, model).generate(model, gen_job())
    assert caught.value.code == "upstream_invalid_response"


def test_a_content_filter_validation_exception_is_400_too(client, stubber):
    model = entry()
    stubber.add_client_error(
        "invoke_model", "ValidationException", "blocked by our content filters " + SECRET_DETAIL, http_status_code=400
    )
    with pytest.raises(InvalidRequest) as caught:
        backend_of(client, model).generate(model, gen_job())
    assert caught.value.code == "content_policy_violation"
    assert_neutral(caught.value)


# -- edits -------------------------------------------------------------------------------------------------


def test_edit_without_a_mask_is_image_to_image_at_the_input_size(client, stubber):
    model = entry()
    body = Capture(json_body=True)
    # SD3.5's image-to-image: prompt, mode "image-to-image", image, strength (AWS's example sends 0.7).
    stubber.add_response("invoke_model", answer(halves(1152, 864)), params(body))
    (image,) = backend_of(client, model).edit(model, edit_job(images=[Image.new("RGBA", (640, 480), GREEN)]))
    assert image.image.size == (640, 480)
    assert image.image.getpixel((40, 240)) == RED and image.image.getpixel((600, 240)) == BLUE
    sent = body.seen
    assert set(sent) == {"prompt", "mode", "image", "strength", "output_format"}
    assert [sent[k] for k in ("prompt", "mode", "strength", "output_format")] == [
        "artificer",
        "image-to-image",
        0.7,
        "png",
    ]
    sent_image = decode_png(sent["image"])
    assert sent_image.mode == "RGB" and sent_image.size == (640, 480) and sent_image.getpixel((5, 5)) == GREEN


def test_edit_strength_seed_and_n_pass_through(client, stubber):
    model = entry()
    bodies = [Capture(json_body=True), Capture(json_body=True)]
    for body in bodies:
        stubber.add_response("invoke_model", answer(png_of(640, 480)), params(body))
    images = backend_of(client, model).edit(model, edit_job(n=2, strength=0.35, seed=9, negative_prompt="blur"))
    assert len(images) == 2
    sent = [(b.seen["strength"], b.seen["seed"], b.seen["negative_prompt"]) for b in bodies]
    assert sent == [(0.35, 9, "blur"), (0.35, 10, "blur")]


def test_inpaint_sends_the_image_and_a_white_is_inpaint_mask(client, stubber):
    model = entry(INPAINT, "stability-inpaint", sizes=("640x480",))
    mask = Image.new("L", (640, 480), 255)
    mask.paste(0, (0, 0, 320, 480))  # darkroom: 0 = edit the left half
    body = Capture(json_body=True)
    stubber.add_response("invoke_model", answer(png_of(640, 480, RED)), params(body, INPAINT))
    (image,) = backend_of(client, model).edit(model, edit_job(mask, grow_mask=8, style_preset="photographic", seed=3))
    assert image.image.size == (640, 480) and image.image.getpixel((0, 0)) == RED
    sent = body.seen
    # The Inpaint section: image, mask, prompt; optional grow_mask, style_preset, seed, output_format.
    assert set(sent) == {"prompt", "image", "mask", "output_format", "grow_mask", "style_preset", "seed"}
    assert (sent["grow_mask"], sent["style_preset"], sent["seed"]) == (8, "photographic", 3)
    assert decode_png(sent["image"]).getpixel((5, 5)) == GREEN
    # "Completely black pixels represent no inpainting strength while completely white pixels represent maximum".
    stability_mask = decode_png(sent["mask"])
    assert stability_mask.mode == "L" and stability_mask.size == (640, 480)
    assert stability_mask.getpixel((5, 5)) == 255  # darkroom's 0 (edit here) -> white
    assert stability_mask.getpixel((600, 5)) == 0  # anything else -> black (keep)
    assert {value for _, value in stability_mask.getcolors()} == {0, 255}


# -- refused before any call (nothing is queued: a call would fail the stubber, not be a 400) ---------------


@pytest.mark.parametrize(("width", "height"), [(1000, 700), (1024, 512), (1024, 1100)])
def test_sizes_without_one_of_the_ratios_are_400_listing_them(client, stubber, width, height):
    model = entry(sizes=(f"{width}x{height}",))
    with pytest.raises(InvalidRequest) as caught:
        backend_of(client, model).generate(model, gen_job(width, height))
    assert caught.value.param == "size" and f"{width}x{height}" in caught.value.message
    assert all(ratio in caught.value.message for ratio in ASPECT_RATIOS)


@pytest.mark.parametrize(
    ("job", "param", "code"),
    [
        (gen_job(transparent=True), "background", "invalid_value"),
        (gen_job(cfg_scale=5), "cfg_scale", "unsupported_parameter"),
        (gen_job(strength=0.5), "strength", "unsupported_parameter"),
        (gen_job(seed=-1), "seed", "invalid_value"),
        (gen_job(seed=MAX_SEED + 1), "seed", "invalid_value"),
        (gen_job(seed=True), "seed", "invalid_value"),
        (gen_job(negative_prompt=""), "negative_prompt", "invalid_value"),
        (gen_job(prompt=""), "prompt", "invalid_value"),
        (gen_job(prompt="x" * 10_001), "prompt", "string_above_max_length"),
        (gen_job(n=11), "n", "invalid_value"),
        (gen_job(n=0), "n", "invalid_value"),
    ],
)
def test_generate_refusals(client, stubber, job, param, code):
    model = entry()
    with pytest.raises(InvalidRequest) as caught:
        backend_of(client, model).generate(model, job)
    assert (caught.value.param, caught.value.code) == (param, code)


@pytest.mark.parametrize(
    ("family", "job", "param"),
    [
        ("stability-image", edit_job(Image.new("L", (640, 480), 0)), "mask"),  # no mask: honours_mask false composites
        ("stability-image", edit_job(transparent=True), "background"),
        ("stability-image", edit_job(strength=1.5), "strength"),
        ("stability-image", edit_job(grow_mask=5), "grow_mask"),
        ("stability-image", edit_job(width=63, height=480), "image"),  # "Minimum 64 pixels per side"
        ("stability-image", edit_job(images=[Image.new("RGB", (640, 480))] * 2), "image"),
        ("stability-inpaint", edit_job(), "mask"),
        ("stability-inpaint", edit_job(Image.new("L", (960, 320), 0), width=960, height=320), "image"),  # > 2.5:1
        ("stability-inpaint", edit_job(Image.new("L", (3100, 3100), 0), width=3100, height=3100), "image"),
        ("stability-inpaint", edit_job(Image.new("L", (640, 480), 0), grow_mask=21), "grow_mask"),
        ("stability-inpaint", edit_job(Image.new("L", (640, 480), 0), style_preset="vaporwave"), "style_preset"),
        ("stability-inpaint", edit_job(Image.new("L", (640, 480), 0), strength=0.5), "strength"),
    ],
)
def test_edit_refusals(client, stubber, family, job, param):
    model = entry(INPAINT if family == "stability-inpaint" else SD35, family)
    with pytest.raises(InvalidRequest) as caught:
        backend_of(client, model).edit(model, job)
    assert caught.value.param == param


def test_an_inpaint_model_does_not_generate(client, stubber):
    model = entry(INPAINT, "stability-inpaint")
    with pytest.raises(InvalidRequest) as caught:
        backend_of(client, model).generate(model, gen_job())
    assert caught.value.code == "model_not_supported"


# -- the family comes from the catalog, never from the model id --------------------------------------------


def test_a_nova_looking_id_declared_stability_gets_stability_bodies(client, stubber):
    model = entry(NOVA, "stability-image")
    body = Capture({"prompt": "A car made out of vegetables.", "aspect_ratio": "1:1", "output_format": "png"})
    stubber.add_response("invoke_model", answer(png_of(1024, 1024)), params(body, NOVA))
    (image,) = backend_of(client, model).generate(model, gen_job())
    assert image.image.size == (1024, 1024)


def test_a_stability_looking_id_declared_nova_gets_nova_bodies(client, stubber):
    model = entry(SD35, "nova-canvas")
    body = Capture(json_body=True)
    stubber.add_response("invoke_model", image_reply({"images": [b64(png_of(1024, 1024))] * 2}), params(body))
    images = backend_of(client, model).generate(model, gen_job(n=2))  # Nova: both images from one call
    assert len(images) == 2 and body.seen["taskType"] == "TEXT_IMAGE"
    assert body.seen["imageGenerationConfig"]["numberOfImages"] == 2


def test_an_inpaint_looking_id_declared_stability_image_refuses_a_mask(client, stubber):
    model = entry(INPAINT, "stability-image")
    with pytest.raises(InvalidRequest) as caught:
        backend_of(client, model).edit(model, edit_job(Image.new("L", (640, 480), 0)))
    assert caught.value.param == "mask"
