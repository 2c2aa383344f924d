"""The API's REQUEST authorizer (TenantLabel): labels each request with its tenant for the access log.

It never refuses a request; the handlers authenticate (darkroom.api.authorizer says why). No metrics: it
counts nothing, and an empty EMF flush would only warn.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom.api.authorizer import key_authenticator, label
from darkroom.observability import capture_handler, logger
from darkroom.snapstart import prime

prime(key_authenticator)  # before a SnapStart snapshot: the key lookup and its DynamoDB client


# log_event=False whatever the environment says: the event carries the API key.
@logger.inject_lambda_context(log_event=False, clear_state=True)
@capture_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return label(event, key_authenticator(), on_lookup_error=lambda: logger.exception("tenant lookup failed"))
