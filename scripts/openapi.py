"""Generate docs/openapi.json from the functions' resolvers (Powertools OpenAPIMerge).

`python scripts/openapi.py` rewrites the file; `python scripts/openapi.py --check` exits 1 when the
committed file is stale (CI runs the check through tests/unit/test_openapi.py).
"""

import json
import os
import sys
from pathlib import Path

from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "openapi.json"


def build() -> str:
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
        # The tenants' API only: /admin/v1 is IAM-authenticated, for operators (docs/operators.md).
        if app.parent.name != "admin":
            merge.add_file(app, resolver_name="app")
    return json.dumps(json.loads(merge.get_openapi_json_schema()), indent=2, sort_keys=True) + "\n"


def main() -> int:
    spec = build()
    if "--check" in sys.argv:
        if not SPEC.exists() or SPEC.read_text() != spec:
            print(f"{SPEC.relative_to(ROOT)} is stale: run `make openapi`", file=sys.stderr)
            return 1
        return 0
    SPEC.write_text(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
