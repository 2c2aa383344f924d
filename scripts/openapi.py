"""Generate docs/openapi.json (the tenants' API) and docs/admin-openapi.json (the operator's /admin/v1) from the
functions' resolvers (Powertools OpenAPIMerge).

`python scripts/openapi.py` rewrites both; `python scripts/openapi.py --check` exits 1 when a committed file is
stale (CI runs the check through tests/unit/test_openapi.py).
"""

import json
import os
import sys
from pathlib import Path

from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, HTTPBearer

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "openapi.json"
ADMIN_SPEC = ROOT / "docs" / "admin-openapi.json"


def build() -> str:
    """The tenants' API: every function but the admin API's."""
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    merge = OpenAPIMerge(
        title="darkroom",
        version="1.0.0",
        description="Serverless, multi-tenant, OpenAI-compatible image API. Base URL: `https://{api}.execute-api.{region}.amazonaws.com/{stage}/v1`.",
        security_schemes={"bearer": HTTPBearer(description="darkroom API key: 'Authorization: Bearer dk-...'")},
        security=[{"bearer": []}],
        on_conflict="error",
    )
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        # The tenants' API only: /admin/v1 is IAM-authenticated, for operators (build_admin, docs/operators.md).
        if app.parent.name != "admin":
            merge.add_file(app, resolver_name="app")
    return json.dumps(json.loads(merge.get_openapi_json_schema()), indent=2, sort_keys=True) + "\n"


def build_admin() -> str:
    """The operator's API (functions/admin): every route takes an AWS SigV4 signature, never a darkroom key."""
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    merge = OpenAPIMerge(
        title="darkroom admin API",
        version="1.0.0",
        description="Tenants, limits, budgets, keys and the billing export, for operators (docs/operators.md). "
        "Base URL: the stack's AdminUrl output, `https://{api}.execute-api.{region}.amazonaws.com/{stage}/admin/v1`.",
        security_schemes={
            "sigv4": APIKey(
                name="Authorization",
                in_=APIKeyIn.header,
                description="AWS Signature Version 4 for the service execute-api, by an IAM principal of the stack's "
                "account allowed execute-api:Invoke on the route",
            )
        },
        security=[{"sigv4": []}],
        on_conflict="error",
    )
    merge.add_file(ROOT / "functions" / "admin" / "app.py", resolver_name="app")
    return json.dumps(json.loads(merge.get_openapi_json_schema()), indent=2, sort_keys=True) + "\n"


def main() -> int:
    specs = {SPEC: build(), ADMIN_SPEC: build_admin()}
    if "--check" in sys.argv:
        stale = [path for path, spec in specs.items() if not path.exists() or path.read_text() != spec]
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run `make openapi`", file=sys.stderr)
        return 1 if stale else 0
    for path, spec in specs.items():
        path.write_text(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
