"""Run the AWS SAM transform on template.yaml offline, as `sam deploy` would before CloudFormation sees it.

cfn-lint checks the template's schema but no longer runs the transform, so errors only the transform
finds (e.g. an unknown key in GatewayResponses) would otherwise surface at deploy time: `sam validate --lint`
runs cfn-lint only and misses them too. Runs in SAM CLI's venv (.venv-sam), with the aws-sam-translator that SAM
CLI pins: see the Makefile's `template` target.
"""

import os
import sys
from pathlib import Path

from samtranslator.public.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class _NoManagedPolicies:
    """The template uses SAM policy templates only; no AWS managed policy names need resolving."""

    def load(self) -> dict:
        return {}


def main(path: str) -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # pseudo-parameters need a region, not AWS
    template = yaml_parse(Path(path).read_text())
    # `sam package` replaces local code folders with S3 locations before the transform; do the same.
    for name, resource in template["Resources"].items():
        key = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}.get(
            resource["Type"]
        )
        if key:
            resource["Properties"][key] = f"s3://packaged-code/{name}.zip"
    try:
        output = transform(template, {}, _NoManagedPolicies())
    except InvalidDocumentException as exc:
        for cause in exc.causes:
            print(f"{path}: {cause.message}", file=sys.stderr)
        return 1
    kinds = sorted({r["Type"] for r in output["Resources"].values()})
    print(f"{path}: SAM transform OK ({len(output['Resources'])} resources: {', '.join(kinds)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
