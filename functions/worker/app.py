"""Background jobs: ``lambda_handler`` runs them (SQS: the jobs queue); ``dead_letter_handler`` ends the ones
that ran out of attempts (SQS: the jobs' dead-letter queue). Thin handlers over :mod:`darkroom.jobs`."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom.content_credentials import preload
from darkroom.job_queue import parse_message
from darkroom.jobs import RetryLater, end_dead_job, run_job
from darkroom.observability import capture_handler, logger, metrics
from darkroom.services import services
from darkroom.snapstart import prime

# A retried job is an expected outcome, not a function error: report it as a batch item failure (the
# message comes back) without failing the invocation, so Lambda's error metrics mean real failures.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
prime(lambda: (services().worker, preload()))  # before a SnapStart snapshot: what the first job would build


def run(record: SQSRecord, lambda_context: LambdaContext) -> None:
    tenant_id, response_id = parse_message(record.body)
    try:
        run_job(tenant_id, response_id, lambda_context.get_remaining_time_in_millis(), services().worker)
    except RetryLater as retry:
        services().jobs.retry_later(record.receipt_handle, retry.delay_seconds)
        raise  # reported as a batch item failure: SQS delivers the message again


def end(record: SQSRecord) -> None:
    end_dead_job(*parse_message(record.body), services().worker)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@capture_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=run, processor=processor, context=context)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@capture_handler
def dead_letter_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=end, processor=processor, context=context)
