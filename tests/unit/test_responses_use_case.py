"""The Responses use cases on in-memory ports (tests/fakes.py), with no socket: routing by capability, the image
tool (generate, and edit of the turn's image or the thread's latest), threading, background acceptance and the
job's answer, cancel. The DynamoDB job states and the worker's retries are tests/adapters/test_jobs.py's."""

import base64
import io

import pytest
from PIL import Image

from darkroom.api.errors import InvalidRequest
from darkroom.api.responses import ImageGenerationCall, OutputMessage, ResponseCreateRequest
from darkroom.deadline import RequestDeadline
from darkroom.ports import RequestContext
from darkroom.response_store import COMPLETED, QUEUED
from darkroom.responses import answer_job, cancel_response, create_response, plan_from_job, retrieve_response
from darkroom.responses.background import job_admission
from darkroom.tenancy import Limits, Tenant
from fakes import MemoryJobs, response_ports

TENANT = Tenant("tnt_0123456789abcdef", "acme", "active", Limits(images_per_minute=20))
TOOL = {"type": "image_generation", "size": "256x256"}


def _create(ports, request_id="req-1", **body):
    request = ResponseCreateRequest.model_validate(body)
    return create_response(RequestContext(TENANT, request_id), request, ports)


def _png(color: str, size=(256, 256)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_a_text_model_answers_in_text_billed_as_one_request_without_images():
    ports = response_ports()
    response = _create(ports, model="local-text", input="hello there")
    (message,) = response.output
    assert isinstance(message, OutputMessage) and "hello there" in message.content[0].text
    assert response.usage.output_tokens > 0 and ports.images.admission.used == 0
    (usage,) = ports.images.meter.events.values()
    assert (usage.operation, usage.images, usage.request_id) == ("text", 0, "req-1")
    stored = ports.records.load(TENANT.tenant_id, response.id)
    assert stored.status == COMPLETED and stored.record.thread.messages[0] == ("user", "hello there")


def test_the_image_tool_generates_stores_the_image_and_keeps_only_its_key():
    ports = response_ports()
    response = _create(ports, model="local-text", input="a lighthouse", tools=[TOOL])
    (call,) = response.output
    assert isinstance(call, ImageGenerationCall) and call.action == "generate" and call.size == "256x256"
    image = Image.open(io.BytesIO(base64.b64decode(call.result)))
    assert image.size == (256, 256)
    record = ports.records.load(TENANT.tenant_id, response.id).record
    key = record.outputs[call.id]
    assert ports.images.store.get(key) == base64.b64decode(call.result)
    assert "result" not in record.response["output"][0] and "url" not in record.response["output"][0]
    assert record.thread.images == [key] and ports.images.admission.used == 1
    (usage,) = ports.images.meter.events.values()
    assert usage.operation == "generate" and usage.images == 1


def test_a_follow_up_edits_the_threads_latest_image():
    ports = response_ports()
    first = _create(ports, "req-1", model="local-image", input="a lighthouse", tools=[TOOL])
    follow = _create(ports, "req-2", model="local-image", input="now make it blue", previous_response_id=first.id)
    (call,) = follow.output
    assert call.action == "edit" and call.size == "256x256"
    thread = ports.records.load(TENANT.tenant_id, follow.id).record.thread
    assert [text for _, text in thread.messages if text in ("a lighthouse", "now make it blue")] == [
        "a lighthouse",
        "now make it blue",
    ]
    assert len(thread.images) == 2
    assert retrieve_response(TENANT, follow.id, ports).output[0].result == call.result  # read back from the store


def test_an_input_image_is_edited_at_its_own_size_and_kept_in_the_thread():
    ports = response_ports()
    content = [
        {"type": "input_text", "text": "make it red"},
        {"type": "input_image", "image_url": _data_url(_png("navy", (512, 256)))},
    ]
    response = _create(
        ports,
        model="local-image",
        input=[{"role": "user", "content": content}],
        tools=[{"type": "image_generation", "size": "auto"}],
    )
    (call,) = response.output
    assert (call.action, call.size) == ("edit", "512x256")
    usage = next(iter(ports.images.meter.events.values()))
    assert usage.operation == "edit" and usage.input_image_tokens > 0
    thread = ports.records.load(TENANT.tenant_id, response.id).record.thread
    assert len(thread.images) == 2  # the input (kept, re-encoded) and the edit


def test_store_false_keeps_nothing():
    ports = response_ports()
    response = _create(ports, model="local-text", input="a lighthouse", tools=[TOOL], store=False)
    assert response.store is False and ports.records.items == {}


def test_a_background_response_is_admitted_queued_then_answered_from_its_job():
    jobs = MemoryJobs()
    ports = response_ports(jobs=jobs)
    queued = _create(ports, "req-bg", model="local-image", input="a lighthouse", tools=[TOOL], background=True)
    assert queued.status == QUEUED and queued.output == [] and jobs.sent == [(TENANT.tenant_id, queued.id)]
    assert ports.images.admission.used == 1 and ports.images.meter.events == {}  # admitted now, billed later
    job = ports.records.load(TENANT.tenant_id, queued.id).job
    assert job.request_id == "req-bg" and job.image_call and "input" not in job.request

    context = RequestContext(TENANT, job.request_id, RequestDeadline.for_job(900_000))
    plan = plan_from_job(context, queued.id, job, ports)
    record, usage, keys = answer_job(context, plan, job_admission(job), ports)
    assert record.response["id"] == queued.id and keys == list(record.outputs.values())
    assert usage.request_id == "req-bg" and ports.images.meter.events == {}  # the worker bills once it is stored
    assert ports.images.admission.used == 1  # the acceptance's admission, not a second one


def test_cancelling_a_queued_response_gives_its_admission_back():
    ports = response_ports()
    queued = _create(ports, model="local-image", input="a lighthouse", tools=[TOOL], background=True)
    assert cancel_response(TENANT, queued.id, ports).status == "cancelled"
    assert ports.images.admission.used == 0


@pytest.mark.parametrize(
    "body,param,code",
    [
        ({"background": True}, "background", "unsupported_value"),  # no job queue on this deployment
        ({"previous_response_id": "resp_" + "0" * 32}, "previous_response_id", "previous_response_not_found"),
        ({"model": "local-image", "tools": [{"type": "image_generation", "size": "7x7"}]}, "tools[0].size", None),
    ],
)
def test_refusals_name_the_parameter_and_take_nothing(body, param, code):
    ports = response_ports(jobs=MemoryJobs(enabled=False))
    with pytest.raises(InvalidRequest) as refused:
        _create(ports, **{"model": "local-text", "input": "a lighthouse", **body})
    assert refused.value.param == param and (code is None or refused.value.code == code)
    assert ports.images.admission.used == 0 and ports.records.items == {} and ports.images.meter.events == {}
