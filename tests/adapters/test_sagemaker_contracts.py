"""The ``sagemaker`` backend's off-the-shelf contracts, ``jumpstart-sd`` and ``hf-diffusers``, against botocore's
Stubber on a real ``sagemaker-runtime`` client (the service model checks every parameter), and moto for the async
endpoint's S3.

Sources of the bodies below (see :mod:`darkroom.inference.sagemaker_contracts`):

* JumpStart text to image: aws/amazon-sagemaker-examples@2d519b52c3a2c2361f2b87f0d3de46fd6c0232a5,
  generative_ai/sm-jumpstart_stable_diffusion_text_to_image.ipynb, sections 2.4 and 2.5 (``payload``,
  ``Accept: application/json;jpeg``, ``response_dict["generated_images"], response_dict["prompt"]``);
* JumpStart inpainting: the same commit, archived/Amazon_JumpStart_Inpainting.ipynb, section 4 (``image``,
  ``mask_image``, ``content_type = "application/json;jpeg"``; mask white = replace);
* the Hugging Face toolkit: aws/sagemaker-huggingface-inference-toolkit@69bc5ef978e1acce63386c10aa2fdb97c92c977e,
  handler_service.py (``inputs``/``parameters``; ``except Exception as e: raise PredictionException(str(e), 400)``),
  diffusers_utils.py (one image per call), decoder_encoder.py (``_JSONEncoder``: a PIL image -> base64 PNG string).
"""

from __future__ import annotations

import base64
import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from PIL import Image

from backend_stubs import b64, no_wait, png_of, stubbed
from darkroom import config
from darkroom.api.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.inference import EditJob, GenerateJob, InputImage, TextJob
from darkroom.inference.resilience import CircuitBreaker, Resilience
from darkroom.inference.sagemaker import SageMakerBackend

ENDPOINT_NAME = "jumpstart-example-model-txt2img-7f3a"
SECRET_DETAIL = "CUDA-OOM-TRACEBACK-9c1e"
JPEG_JSON = "application/json;jpeg"


def entry(contract: str, **endpoint) -> ModelEntry:
    return ModelEntry.model_validate(
        {
            "id": "sd-offshelf",
            "backend": "sagemaker",
            "endpoint": {"endpoint_name": ENDPOINT_NAME, "contract": contract, "timeout_seconds": 20, **endpoint},
            "capabilities": ["generate", "edit", "analyze"],
            "sizes": ["512x512", "64x48"],
            "default_size": "512x512",
            "max_n": 4,
            "passthrough": ["seed", "negative_prompt", "steps", "guidance", "complexity"],
        }
    )


def jpeg_of(width: int, height: int, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def reply(data) -> dict:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"}


def toolkit_answer(png: bytes) -> bytes:
    """What the toolkit sends for Accept: application/json: encode_json(PIL image) -> a JSON string, base64 PNG."""
    return json.dumps(base64.b64encode(png).decode("utf-8"), separators=(",", ":")).encode()


class Sent:
    """Matches the JSON request body in Stubber's expected_params and keeps every one it saw."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def __eq__(self, other) -> bool:
        self.bodies.append(json.loads(other))
        return True

    __hash__ = None


def call(sent: Sent, content_type: str, accept: str) -> dict:
    return {"EndpointName": ENDPOINT_NAME, "Body": sent, "ContentType": content_type, "Accept": accept}


def gen_job(prompt="astronaut on a horse", size=(512, 512), n=1, transparent=False, deadline=20.0, **options):
    return GenerateJob(
        prompt=prompt,
        width=size[0],
        height=size[1],
        n=n,
        quality="medium",
        transparent=transparent,
        deadline_seconds=deadline,
        options=options,
    )


def edit_job(mask: Image.Image | None, images=None, **options) -> EditJob:
    return EditJob(
        prompt="a white cat, blue eyes, wearing a sweater, lying in park",
        images=images or [Image.new("RGB", (64, 48), (10, 200, 10))],
        mask=mask,
        width=64,
        height=48,
        n=1,
        quality="medium",
        transparent=False,
        input_fidelity="low",
        deadline_seconds=20,
        options=options,
    )


def left_half_mask() -> Image.Image:
    mask = Image.new("L", (64, 48), 255)
    mask.paste(0, (0, 0, 32, 48))  # darkroom (OpenAI): alpha 0 = edit the left half
    return mask


def decoded(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


@pytest.fixture
def client():
    return boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


@pytest.fixture
def stubber(client):
    with stubbed(client) as stub:
        yield stub


def backend_for(model, client, threshold=100, **kwargs) -> SageMakerBackend:
    kwargs.setdefault("resilience", no_wait())
    return SageMakerBackend(model, client=client, breaker=CircuitBreaker(threshold=threshold), **kwargs)


def model_error(stubber, status: int, message: str) -> None:
    stubber.add_client_error(
        "invoke_endpoint",
        "ModelError",
        f"Received client error ({status}) from primary with message {message!r}.",
        http_status_code=424,
        modeled_fields={"OriginalStatusCode": status, "OriginalMessage": message},
    )


# -- jumpstart-sd ------------------------------------------------------------------------------------


def test_jumpstart_generate_sends_the_notebooks_payload_and_reads_generated_images(client, stubber):
    model = entry("jumpstart-sd")
    sent = Sent()
    answer = {"generated_images": [b64(jpeg_of(512, 512, (0, 0, 250))), b64(jpeg_of(512, 512))], "prompt": "x"}
    stubber.add_response("invoke_endpoint", reply(answer), call(sent, "application/json", JPEG_JSON))

    images = backend_for(model, client).generate(model, gen_job(n=2, steps=50, guidance=7.5, seed=1))

    # The notebook's payload (section 2.4), num_images_per_prompt = n; darkroom's steps/guidance under its names.
    assert sent.bodies == [
        {
            "prompt": "astronaut on a horse",
            "width": 512,
            "height": 512,
            "num_images_per_prompt": 2,
            "num_inference_steps": 50,
            "guidance_scale": 7.5,
            "seed": 1,
        }
    ]
    assert [i.image.size for i in images] == [(512, 512), (512, 512)]
    red, green, blue = images[0].image.getpixel((100, 100))
    assert blue > 200 and red < 30 and green < 30  # the JPEG the endpoint drew, in order


def test_jumpstart_edit_sends_image_and_a_white_is_replace_mask_as_jpeg(client, stubber):
    model = entry("jumpstart-sd")
    sent = Sent()
    stubber.add_response(
        "invoke_endpoint", reply({"generated_images": [b64(jpeg_of(64, 48))]}), call(sent, JPEG_JSON, JPEG_JSON)
    )

    job = edit_job(left_half_mask(), steps=50, guidance=7.5, seed=0, negative_prompt="poorly drawn feet")
    (image,) = backend_for(model, client).edit(model, job)

    (body,) = sent.bodies
    # The inpainting notebook's payload keys (section 4), plus num_images_per_prompt (its supported parameters).
    assert set(body) == {
        "prompt",
        "image",
        "mask_image",
        "num_inference_steps",
        "guidance_scale",
        "seed",
        "negative_prompt",
        "num_images_per_prompt",
    }
    assert (body["num_inference_steps"], body["guidance_scale"], body["seed"]) == (50, 7.5, 0)
    picture, mask = decoded(body["image"]), decoded(body["mask_image"])
    assert picture.format == mask.format == "JPEG" and picture.size == mask.size == (64, 48)
    green = picture.getpixel((5, 5))
    assert green[1] > 190 and green[0] < 25
    assert mask.convert("L").getpixel((5, 5)) > 240 and mask.convert("L").getpixel((60, 5)) < 15  # white = replace
    assert image.image.size == (64, 48)


@pytest.mark.parametrize(
    ("job", "param"),
    [
        (edit_job(None), "mask"),
        (edit_job(left_half_mask(), images=[Image.new("RGB", (64, 48)), Image.new("RGB", (8, 8))]), "image"),
    ],
    ids=["no-mask", "two-images"],
)
def test_jumpstart_edit_refuses_what_inpainting_cannot_take_before_calling(client, stubber, job, param):
    model = entry("jumpstart-sd")
    with pytest.raises(InvalidRequest) as caught:
        backend_for(model, client).edit(model, job)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_an_answer_of_the_jobs_shape_at_another_size_is_resized(client, stubber):
    model = entry("jumpstart-sd")
    stubber.add_response("invoke_endpoint", reply({"generated_images": [b64(jpeg_of(128, 96, (0, 0, 250)))]}))
    (image,) = backend_for(model, client).edit(model, edit_job(left_half_mask()))
    assert image.image.size == (64, 48) and image.image.getpixel((2, 2))[2] > 200  # the edge kept: not cropped


@pytest.mark.parametrize(
    "answer",
    [
        {"generated_images": [b64(jpeg_of(48, 48))]},  # another shape: a crop would cut the drawing
        {"generated_images": []},
        {"generated_images": [b64(jpeg_of(64, 48)), b64(jpeg_of(64, 48))]},
        {"generated_images": [[[[255, 0, 0]]]]},  # Accept application/json's nested RGB arrays
        {"generated_image": b64(jpeg_of(64, 48))},
        {"images": [b64(jpeg_of(64, 48))]},
        {"generated_images": ["not base64!"]},
    ],
    ids=["other-shape", "none", "too-many", "rgb-arrays", "singular-key", "darkroom-key", "junk"],
)
def test_jumpstart_answers_that_break_the_contract_are_502(client, stubber, answer):
    model = entry("jumpstart-sd")
    stubber.add_response("invoke_endpoint", reply(answer))
    with pytest.raises(UpstreamError) as caught:
        backend_for(model, client).edit(model, edit_job(left_half_mask()))
    assert caught.value.code == "upstream_invalid_response"


# -- hf-diffusers ------------------------------------------------------------------------------------


def test_hf_diffusers_sends_inputs_and_parameters_and_reads_a_bare_base64_string(client, stubber):
    model = entry("hf-diffusers")
    sent = Sent()
    answer = toolkit_answer(png_of(512, 512, (1, 2, 3)))
    stubber.add_response("invoke_endpoint", reply(answer), call(sent, "application/json", "application/json"))

    (image,) = backend_for(model, client).generate(model, gen_job(negative_prompt="blurry", steps=30, guidance=5))

    assert sent.bodies == [
        {
            "inputs": "astronaut on a horse",
            "parameters": {
                "width": 512,
                "height": 512,
                "negative_prompt": "blurry",
                "num_inference_steps": 30,
                "guidance_scale": 5,
            },
        }
    ]
    assert "num_images_per_prompt" not in sent.bodies[0]["parameters"]  # the toolkit forces 1 anyway
    assert image.image.size == (512, 512) and image.image.getpixel((0, 0)) == (1, 2, 3)


def test_hf_diffusers_makes_n_invocations_for_n_images(client, stubber):
    model = entry("hf-diffusers")
    sent = Sent()
    for colour in ((1, 1, 1), (2, 2, 2), (3, 3, 3)):
        stubber.add_response(
            "invoke_endpoint", reply(toolkit_answer(png_of(512, 512, colour))), call(sent, *["application/json"] * 2)
        )
    images = backend_for(model, client).generate(model, gen_job(n=3))
    assert [i.image.getpixel((0, 0)) for i in images] == [(1, 1, 1), (2, 2, 2), (3, 3, 3)]
    assert len(sent.bodies) == 3 and all(body == sent.bodies[0] for body in sent.bodies)


def test_hf_diffusers_n_invocations_share_the_jobs_deadline(client, stubber):
    model = entry("hf-diffusers")
    now = [0.0]
    resilience = Resilience(sleep=lambda _s: None, clock=lambda: now[0])

    def ten_seconds_pass(**_kwargs) -> None:  # each invocation takes 10 s of the job's 20
        now[0] += 10

    client.meta.events.register("before-parameter-build.sagemaker-runtime.InvokeEndpoint", ten_seconds_pass)
    for _ in range(2):  # a third invocation is never made: the Stubber would fail on it
        stubber.add_response("invoke_endpoint", reply(toolkit_answer(png_of(512, 512))))
    with pytest.raises(UpstreamTimeout):
        backend_for(model, client, resilience=resilience).generate(model, gen_job(n=3, deadline=20))


@pytest.mark.parametrize(
    "answer",
    [
        {"images": [b64(png_of(512, 512))]},
        [b64(png_of(512, 512))],
        json.dumps(b64(png_of(256, 512))),  # another shape
        "<html>" + SECRET_DETAIL,
    ],
    ids=["object", "list", "other-shape", "html"],
)
def test_hf_diffusers_answers_other_than_one_image_string_are_502(client, stubber, answer):
    model = entry("hf-diffusers")
    stubber.add_response("invoke_endpoint", reply(answer.encode() if isinstance(answer, str) else answer))
    with pytest.raises(UpstreamError) as caught:
        backend_for(model, client).generate(model, gen_job())
    assert caught.value.code == "upstream_invalid_response"


@pytest.mark.parametrize("contract", ["hf-diffusers", "jumpstart-sd"])
def test_a_4xx_from_the_hugging_face_container_is_a_fault_that_counts_against_the_endpoint(client, stubber, contract):
    model = entry(contract)
    backend = backend_for(model, client, threshold=1)
    # handler_service.handle: every exception -> PredictionException(str(e), 400). Even a body that looks like
    # darkroom's own safety refusal is not read: these containers do not speak darkroom's contract.
    refusal = json.dumps({"error": {"code": "content_policy_violation", "param": "seed"}, "detail": SECRET_DETAIL})
    model_error(stubber, 400, refusal)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    assert SECRET_DETAIL not in caught.value.message
    assert backend.breaker.state == "open"  # unhealthy: a CUDA OOM is a 400 there too


def test_the_darkroom_contracts_deliberate_4xx_still_spares_the_breaker(client, stubber):
    model = entry("darkroom")
    backend = backend_for(model, client, threshold=1)
    model_error(stubber, 400, "bad request")
    with pytest.raises(UpstreamError):
        backend.generate(model, gen_job())
    assert backend.breaker.state == "closed"


# -- refusals before any call ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract", "options", "param"),
    [
        ("hf-diffusers", {"seed": 7}, "seed"),  # the pipeline takes a generator, not a seed: refused, not ignored
        ("jumpstart-sd", {"seed": "7"}, "seed"),
        ("jumpstart-sd", {"seed": True}, "seed"),
        ("jumpstart-sd", {"steps": 0}, "steps"),
        ("hf-diffusers", {"steps": 2.5}, "steps"),
        ("jumpstart-sd", {"guidance": "high"}, "guidance"),
        ("hf-diffusers", {"negative_prompt": ["a"]}, "negative_prompt"),
        ("jumpstart-sd", {"complexity": "high"}, "complexity"),
    ],
)
def test_pass_through_values_the_container_cannot_take_are_the_clients_400(client, stubber, contract, options, param):
    model = entry(contract)
    with pytest.raises(InvalidRequest) as caught:
        backend_for(model, client).generate(model, gen_job(**options))
    assert (caught.value.status, caught.value.param) == (400, param)


@pytest.mark.parametrize("contract", ["hf-diffusers", "jumpstart-sd"])
@pytest.mark.parametrize(
    ("job", "param"),
    [(gen_job(size=(64, 48), transparent=True), "background"), (gen_job(size=(500, 500)), "size")],
    ids=["transparent", "not-multiple-of-8"],
)
def test_what_a_diffusion_container_cannot_draw_is_refused(client, stubber, contract, job, param):
    model = entry(contract)
    with pytest.raises(InvalidRequest) as caught:
        backend_for(model, client).generate(model, job)
    assert caught.value.param == param


@pytest.mark.parametrize("contract", ["hf-diffusers", "jumpstart-sd"])
def test_analyze_is_refused_on_an_image_only_contract(client, stubber, contract):
    model = entry(contract)
    job = TextJob(
        instructions=None,
        messages=[("user", "hi")],
        images=[InputImage(Image.new("RGB", (8, 8)), "png")],
        deadline_seconds=9,
    )
    with pytest.raises(InvalidRequest) as caught:
        backend_for(model, client).respond(model, job)
    assert (caught.value.status, caught.value.param) == (400, "model")


def test_hf_diffusers_refuses_edits(client, stubber):
    model = entry("hf-diffusers")
    with pytest.raises(InvalidRequest) as caught:
        backend_for(model, client).edit(model, edit_job(left_half_mask()))
    assert caught.value.param == "model"


# -- asynchronous endpoints ----------------------------------------------------------------------------


class Anything:
    def __eq__(self, other) -> bool:
        return True

    __hash__ = None


@pytest.mark.parametrize(
    ("contract", "answer", "headers"),
    [
        (
            "jumpstart-sd",
            json.dumps({"generated_images": [b64(jpeg_of(64, 48))]}).encode(),
            ("application/json", JPEG_JSON),
        ),
        ("hf-diffusers", toolkit_answer(png_of(64, 48)), ("application/json", "application/json")),
    ],
)
def test_an_async_endpoint_gets_the_contracts_body_and_headers_inline(aws, client, stubber, contract, answer, headers):
    model = entry(contract, async_inference=True)
    bucket = config.get_settings().images_bucket
    s3 = config.client("s3")
    sent = Sent()
    stubber.add_response(
        "invoke_endpoint_async",
        {
            "InferenceId": "answer-1",
            "OutputLocation": f"s3://{bucket}/async-inference/output/answer-1.out",
            "FailureLocation": f"s3://{bucket}/async-inference/failure/answer-1-error.out",
        },
        {
            "EndpointName": ENDPOINT_NAME,
            "Body": sent,
            "ContentType": headers[0],
            "Accept": headers[1],
            "InferenceId": Anything(),
            "InvocationTimeoutSeconds": 900,
            "RequestTTLSeconds": 60,
        },
    )

    def endpoint_answers(_seconds: float) -> None:
        s3.put_object(Bucket=bucket, Key="async-inference/output/answer-1.out", Body=answer)

    backend = backend_for(model, client, sleep=endpoint_answers)
    (image,) = backend.generate(model, gen_job(size=(64, 48), deadline=60))

    assert image.image.size == (64, 48) and len(sent.bodies) == 1
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="async-inference/input/")
    assert listing.get("KeyCount", 0) == 0


def test_an_async_hf_diffusers_endpoint_takes_one_image_per_request(aws, client, stubber):
    model = entry("hf-diffusers", async_inference=True)
    with pytest.raises(InvalidRequest) as caught:
        backend_for(model, client).generate(model, gen_job(n=2))
    assert caught.value.param == "n"
