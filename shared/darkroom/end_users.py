"""End users: ``safety_identifier`` (and the deprecated ``user``) as an opaque id, never the raw value.

A tenant may name its own end user on a request so abuse can be traced to them. darkroom keeps only
``eu_`` + the first 32 hex digits of SHA-256 over a fixed label, the tenant id and the value: the same
end user of one tenant always gets the same id (usage records and log lines can be grouped by it),
two tenants' end users never share one, and the raw value reaches no table, log line or response.

This is a pseudonym, not encryption: anyone who can read the records, knows the tenant id and can guess
the value (an e-mail address, say) can confirm the guess. As OpenAI advises, send a value that is
already a hash of the user's identity; darkroom's hash then only keeps tenants apart.
"""

from __future__ import annotations

import hashlib

from darkroom.observability import logger

_LABEL = b"darkroom.end-user.v1"


def end_user_id(tenant_id: str, safety_identifier: str | None, user: str | None = None) -> str | None:
    """The opaque id for the request's end user: ``safety_identifier`` when non-empty, else ``user`` (as
    OpenAI falls back to it), else None."""
    value = safety_identifier or user
    if not value:
        return None
    digest = hashlib.sha256(b"\x00".join((_LABEL, tenant_id.encode(), value.encode("utf-8", "replace"))))
    return "eu_" + digest.hexdigest()[:32]


def identify(tenant_id: str, safety_identifier: str | None, user: str | None = None) -> str | None:
    """:func:`end_user_id`, also added to this invocation's log keys (``end_user``) when there is one."""
    end_user = end_user_id(tenant_id, safety_identifier, user)
    if end_user:
        logger.append_keys(end_user=end_user)
    return end_user
