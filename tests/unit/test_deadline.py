import time

from darkroom.config import Settings
from darkroom.deadline import NO_DEADLINE, RequestDeadline


def test_the_gateway_timeout_bounds_a_request_that_waited_before_lambda():
    deadline = RequestDeadline.for_request(
        remaining_lambda_ms=60_000, gateway_received_epoch_ms=int((time.time() - 10) * 1000)
    )
    # 29 s gateway timeout - 10 s already waited - 3 s answer margin
    assert 15.5 < deadline.inference_seconds(ceiling=60) <= 16.0
    assert deadline.inference_seconds(ceiling=5) == 5


def test_the_lambda_remaining_time_bounds_it_and_never_goes_negative():
    assert 0.5 < RequestDeadline.for_request(4_000, None).inference_seconds(ceiling=60) <= 1.0
    assert RequestDeadline.for_request(1_000, None).inference_seconds(ceiling=60) == 0.0


def test_without_a_deadline_the_ceiling_applies():
    assert NO_DEADLINE.inference_seconds(ceiling=20) == 20


def test_a_background_job_gets_the_job_ceiling_and_no_gateway_timeout():
    settings = Settings(inference_timeout_seconds=20, job_inference_timeout_seconds=600)
    job = RequestDeadline.for_job(remaining_lambda_ms=900_000)
    assert job.background
    assert 590 < job.inference_budget(settings) <= 600
    assert RequestDeadline.for_request(900_000, None).inference_budget(settings) == 20
