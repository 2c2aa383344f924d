import time

from darkroom import deadline


def test_the_upstream_gets_what_lambda_and_the_gateway_leave_minus_the_answer_margin():
    deadline.start(remaining_lambda_ms=60_000, gateway_received_epoch_ms=int((time.time() - 10) * 1000))
    # The gateway waited 10 s of its 29: 19 left, 3 kept back to answer.
    assert 15.5 < deadline.inference_seconds(ceiling=60) <= 16.0
    assert deadline.inference_seconds(ceiling=5) == 5


def test_a_short_lambda_budget_wins_and_nothing_left_is_zero():
    deadline.start(remaining_lambda_ms=4_000, gateway_received_epoch_ms=None)
    assert 0.5 < deadline.inference_seconds(ceiling=60) <= 1.0
    deadline.start(remaining_lambda_ms=1_000, gateway_received_epoch_ms=None)
    assert deadline.inference_seconds(ceiling=60) == 0.0


def test_without_a_request_the_ceiling_applies():
    deadline._answer_by.set(None)
    assert deadline.inference_seconds(ceiling=20) == 20
