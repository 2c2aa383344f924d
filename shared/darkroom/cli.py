"""The ``darkroom`` command: run the local stack and administer tenants, keys and usage.

Admin commands use the ``DARKROOM_*`` table names from the environment (``darkroom serve`` prints the
lines to export), or read them from a deployed stack's outputs with ``--stack NAME``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

from darkroom import admin, budgets, config, services

if TYPE_CHECKING:
    from darkroom.services import Services

_STACK_OUTPUTS = {
    "TenantsTableName": "DARKROOM_TENANTS_TABLE",
    "RateLimitsTableName": "DARKROOM_RATE_LIMITS_TABLE",
    "UsageTableName": "DARKROOM_USAGE_TABLE",
    "ImagesBucketName": "DARKROOM_IMAGES_BUCKET",
    "ContentCredentialsKeyArn": "DARKROOM_CONTENT_CREDENTIALS_KMS_KEY_ID",
}
# Template parameters a deployed stack was given: the limits of tenants created without --images-per-minute & co.
_STACK_PARAMETERS = {
    "DefaultImagesPerMinute": "DARKROOM_DEFAULT_IMAGES_PER_MINUTE",
    "DefaultImagesPerDay": "DARKROOM_DEFAULT_IMAGES_PER_DAY",
    "DefaultRequestsPerMinute": "DARKROOM_DEFAULT_REQUESTS_PER_MINUTE",
    "ContentCredentialsCertChainParameter": "DARKROOM_CONTENT_CREDENTIALS_CERT_CHAIN_PARAMETER",
}


def _limit(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a limit is at least 1")
    return value


def _moment(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a date and time as ISO 8601, e.g. 2027-01-31T00:00:00Z") from None


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--stack",
        default=os.environ.get("DARKROOM_STACK"),
        help="a deployed CloudFormation stack to administer (its outputs name the tables)",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser = argparse.ArgumentParser(prog="darkroom", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser

    def command(
        group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str | None = None
    ) -> argparse.ArgumentParser:
        if summary is None:  # no help=: argparse would list the subcommand with an empty line of help
            return group.add_parser(name, parents=[common])
        return group.add_parser(name, parents=[common], help=summary)

    serve = add("serve", help="serve the API locally from template.yaml")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    serve.add_argument(
        "--model-server",
        action="store_true",
        help="also run darkroom's model server (endpoint/) with tiny models behind the sagemaker "
        "backend (needs endpoint/.venv: make run-endpoint)",
    )

    tenants = add("tenants", help="create, list and suspend tenants, change their limits").add_subparsers(
        dest="action", required=True
    )
    create = command(tenants, "create")
    create.add_argument("name")
    create.add_argument("--images-per-minute", type=_limit)
    create.add_argument("--images-per-day", type=_limit)
    create.add_argument("--requests-per-minute", type=_limit)
    command(tenants, "list")
    command(tenants, "suspend").add_argument("tenant_id")
    command(tenants, "activate").add_argument("tenant_id")
    set_limits = command(tenants, "set-limits", summary="change a tenant's limits (the ones given; the others stay)")
    set_limits.add_argument("tenant_id")
    set_limits.add_argument("--images-per-minute", type=_limit)
    set_limits.add_argument("--images-per-day", type=_limit)
    set_limits.add_argument("--requests-per-minute", type=_limit)
    set_budget = command(tenants, "set-budget", summary="set or remove a monthly USD budget (darkroom.budgets)")
    set_budget.add_argument("tenant_id")
    amount = set_budget.add_mutually_exclusive_group(required=True)
    amount.add_argument("--monthly-usd", type=float, help="the hard cap on a calendar month's (UTC) spend")
    amount.add_argument("--none", action="store_true", help="remove the budget (unlimited spend)")
    set_budget.add_argument("--soft-percent", type=int, default=80, help="alarm past this share (default 80)")

    keys = add("keys", help="issue, list and revoke API keys").add_subparsers(dest="action", required=True)
    issue = command(keys, "issue")
    issue.add_argument("tenant_id")
    issue.add_argument("--expires", type=_moment, help="when the key stops working (ISO 8601, UTC if no zone)")
    command(keys, "list").add_argument("tenant_id")
    command(keys, "revoke").add_argument("key_id")

    verify = add("verify", help="print what a C2PA validator sees in an image's Content Credentials")
    verify.add_argument("file")
    verify.add_argument("--trust", help="a PEM file of trusted roots (the local stack's: its root.pem)")
    verify.add_argument("--json", action="store_true", help="print JSON instead of text")
    credentials = add("credentials", help="Content Credentials signing").add_subparsers(dest="action", required=True)
    command(
        credentials,
        "dev-certificate",
        summary="issue a development certificate for the stack's KMS key, into its certificate-chain parameter",
    )

    usage = command(commands, "usage", summary="a tenant's usage by day (UTC) and model, as GET /v1/usage shows it")
    usage.add_argument("tenant_id", nargs="?", help="the tenant (none: every tenant's usage, the billing export)")
    usage.add_argument(
        "--start-date",
        "--since",
        dest="start_date",
        help="first day, YYYY-MM-DD (default: 29 days before the last; at most 366 days)",
    )
    usage.add_argument("--end-date", dest="end_date", help="last day, YYYY-MM-DD (default: today, UTC)")
    usage.add_argument("--csv", action="store_true", help="print CSV: a header row, one row per day and model")
    return parser


def _use_stack(name: str) -> None:
    stack = config.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
    for output in stack.get("Outputs", []):
        if output["OutputKey"] in _STACK_OUTPUTS:
            os.environ[_STACK_OUTPUTS[output["OutputKey"]]] = output["OutputValue"]
    for parameter in stack.get("Parameters", []):
        if parameter["ParameterKey"] in _STACK_PARAMETERS and parameter.get("ParameterValue"):
            os.environ[_STACK_PARAMETERS[parameter["ParameterKey"]]] = parameter["ParameterValue"]
    services.reset()


def _print(args: argparse.Namespace, rows: list[dict[str, Any]] | dict[str, Any], text: str) -> None:
    print(json.dumps(rows, indent=2) if args.json else text)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_IGN)  # once: a second TERM must not interrupt the clean-up
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> None:
    from darkroom.local import stack

    if args.model_server:  # the first run writes the tiny models, and torch takes a while to import
        print("darkroom: starting the model server (endpoint/) with tiny models...", flush=True)
    local = stack.start(
        args.host, args.port, demo_key=os.environ.get("DARKROOM_DEMO_KEY"), model_server=args.model_server
    )
    lines = [
        f"darkroom local stack: {local.base_url}  (AWS at {os.environ['AWS_ENDPOINT_URL']})",
        f"demo tenant {local.demo_tenant_id}, key: {local.demo_key}",
        f"playground: {local.base_url.removesuffix('/v1')}/playground   "
        f"API docs: {local.base_url.removesuffix('/v1')}/docs",
        f"admin API: {local.environment['DARKROOM_ADMIN_URL']} (SigV4 with the AWS_* credentials below: "
        "docs/operators.md)",
    ]
    if local.model_server:
        models = local.model_server
        lines += [
            f"model server: {models.url} (ready in {models.ready_seconds:.1f}s; log: {models.log}), "
            f"serving {', '.join(models.models)} (randomly initialised tiny models, not trained ones)"
        ]
    lines += ["In another shell, to use the openai SDK and the darkroom CLI against it:"]
    # Quoted for the shell: DARKROOM_CATALOG_EXTRA is JSON, and the lines are meant to be pasted or eval'd.
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(local.environment.items())]
    print("\n".join(lines), flush=True)
    # SIGTERM (CI, process managers) shuts down like Ctrl-C: workers and moto stop with the server.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        local.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        local.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the ``darkroom`` command ``argv`` (default: the process's arguments); its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "csv", False) and args.json:
        parser.error("choose one of --csv and --json")
    if args.command == "serve":
        _serve(args)
        return 0
    if args.command == "verify":
        return _verify(args)
    if getattr(args, "stack", None):
        _use_stack(args.stack)
    from darkroom.api.errors import ApiError, InvalidRequest

    run = _ADMIN_COMMANDS[(args.command, getattr(args, "action", None))]
    svc = services.services()
    try:
        return run(args, svc)
    except ApiError as exc:  # the admin API's errors (darkroom.admin); a bad value exits 2, as argparse's do
        print(f"darkroom: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidRequest) else 1


def _tenants_create(args: argparse.Namespace, svc: Services) -> int:
    limits = admin.LimitChanges(args.images_per_minute, args.images_per_day, args.requests_per_minute)
    tenant = admin.create_tenant(svc.directory, args.name, limits)  # limits not given: the stack's Default* parameters
    _print(args, admin.tenant_json(tenant), f"{tenant.tenant_id}\t{tenant.name}")
    return 0


def _tenants_list(args: argparse.Namespace, svc: Services) -> int:
    rows = [admin.tenant_json(t) for t in admin.all_tenants(svc.directory)]
    _print(
        args,
        rows,
        "\n".join(
            f"{r['tenant_id']}\t{r['name']}\t{r['status']}\tipm={r['images_per_minute']} "
            f"ipd={r['images_per_day']} rpm={r['requests_per_minute']}"
            for r in rows
        ),
    )
    return 0


def _tenants_set_limits(args: argparse.Namespace, svc: Services) -> int:
    limits = admin.LimitChanges(args.images_per_minute, args.images_per_day, args.requests_per_minute)
    tenant = admin.set_limits(svc.directory, args.tenant_id, limits)
    limits_now = tenant.limits
    _print(
        args,
        admin.tenant_json(tenant),
        f"{tenant.tenant_id}\tipm={limits_now.images_per_minute} "
        f"ipd={limits_now.images_per_day} rpm={limits_now.requests_per_minute} (takes effect within "
        f"{svc.settings.key_cache_seconds:g}s)",
    )
    return 0


def _tenants_set_status(args: argparse.Namespace, svc: Services) -> int:
    """``suspend`` and ``activate``."""
    tenant = admin.set_status(svc.directory, args.tenant_id, "suspended" if args.action == "suspend" else "active")
    _print(args, admin.tenant_json(tenant), f"{tenant.tenant_id}\t{tenant.status}")
    return 0


def _keys_issue(args: argparse.Namespace, svc: Services) -> int:
    key, secret = admin.issue_key(svc.directory, args.tenant_id, args.expires)
    until = f" until {key.expires_at}" if key.expires_at else ""
    text = f"{key.key_id}\t{secret}\n(shown once: store it now; darkroom keeps only its hash){until}"
    _print(args, admin.key_json(key, secret), text)
    return 0


def _keys_list(args: argparse.Namespace, svc: Services) -> int:
    rows = [admin.key_json(k) for k in admin.list_keys(svc.directory, args.tenant_id)]
    _print(
        args,
        rows,
        "\n".join(
            f"{r['key_id']}\t{r['prefix']}...\t{r['status']}\t{r['created_at']}\texpires {r['expires_at'] or 'never'}"
            for r in rows
        ),
    )
    return 0


def _keys_revoke(args: argparse.Namespace, svc: Services) -> int:
    key = admin.revoke_key(svc.directory, args.key_id)
    text = f"{key.key_id}\t{key.status} (takes effect within {svc.settings.key_cache_seconds:g}s)"
    _print(args, admin.key_json(key), text)
    return 0


_USAGE_COLUMNS = ("date", "model", "requests", "images", "input_tokens", "output_tokens", "cost_usd")
_USAGE_HEADINGS = ("date", "model", "requests", "images", "input tokens", "output tokens", "cost (USD)")


def _usage(args: argparse.Namespace, svc: Services) -> int:
    """The rows GET /v1/usage answers (one function: ``UsageMeter.by_day_and_model``), as a table, CSV or JSON."""
    from darkroom.api.usage import usage_list
    from darkroom.metering import usage_window

    if args.tenant_id is None:  # the admin API's billing export (GET /admin/v1/usage): CSV unless --json
        rows = admin.usage_export(svc.directory, svc.meter, None, args.start_date, args.end_date)
        print(json.dumps(rows, indent=2) if args.json else admin.export_csv(rows), end="\n" if args.json else "")
        return 0
    start, end = usage_window(args.start_date, args.end_date)
    usage = usage_list(svc.meter, args.tenant_id, start, end)
    rows = [row.model_dump() for row in usage.data]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(_USAGE_COLUMNS)
        writer.writerows([*(row[c] for c in _USAGE_COLUMNS[:-1]), f"{row['cost_usd']:.6f}"] for row in rows)
    elif not rows:
        print("no usage")
    else:
        totals = usage.totals.model_dump() | {"date": "total", "model": ""}
        print(_table([_USAGE_HEADINGS, *(_usage_cells(r) for r in rows), _usage_cells(totals)]))
    return 0


def _verify(args: argparse.Namespace) -> int:
    """0 when the manifest is there and valid (or trusted), 1 otherwise."""
    from pathlib import Path

    from darkroom.content_credentials import verify
    from darkroom.intake import sniff
    from darkroom.local.dev_credentials import describe

    data = Path(args.file).read_bytes()
    image_format = sniff(data)
    if image_format not in ("png", "jpeg", "webp"):
        print("darkroom: not a PNG, JPEG or WebP image", file=sys.stderr)
        return 1
    seen = verify(data, image_format, Path(args.trust).read_text() if args.trust else None)
    _print(args, seen, describe(seen))
    return 0 if seen["state"] in ("Valid", "Trusted") else 1


def _tenants_set_budget(args: argparse.Namespace, svc: Services) -> int:
    tenant = admin.set_budget(svc.directory, args.tenant_id, None if args.none else args.monthly_usd, args.soft_percent)
    budget = tenant.limits.monthly_budget_micro_usd
    text = "none" if budget is None else f"{budgets.usd_text(budget)} USD a month, alarm at {args.soft_percent}%"
    row = admin.tenant_json(tenant)
    _print(args, row, f"{tenant.tenant_id}\tbudget {text} (within {svc.settings.key_cache_seconds:g}s)")
    return 0


def _dev_certificate(args: argparse.Namespace, svc: Services) -> int:
    from darkroom.local.dev_credentials import store_for_stack

    stored = store_for_stack(config.get_settings())
    print(stored or "darkroom: name the stack (--stack) to certify", file=sys.stdout if stored else sys.stderr)
    return 0 if stored else 1


# (command, action) -> what runs it against the stack's services; its exit code.
_ADMIN_COMMANDS: dict[tuple[str, str | None], Callable[[argparse.Namespace, Services], int]] = {
    ("tenants", "create"): _tenants_create,
    ("tenants", "list"): _tenants_list,
    ("tenants", "set-limits"): _tenants_set_limits,
    ("tenants", "set-budget"): _tenants_set_budget,
    ("tenants", "suspend"): _tenants_set_status,
    ("tenants", "activate"): _tenants_set_status,
    ("keys", "issue"): _keys_issue,
    ("keys", "list"): _keys_list,
    ("keys", "revoke"): _keys_revoke,
    ("usage", None): _usage,
    ("credentials", "dev-certificate"): _dev_certificate,
}


def _usage_cells(row: dict[str, Any]) -> list[str]:
    return [row["date"], row["model"], *(f"{row[c]:,}" for c in _USAGE_COLUMNS[2:-1]), f"{row['cost_usd']:.6f}"]


def _table(lines: list[Sequence[object]]) -> str:
    """Aligned columns: the first two (date, model) to the left, the numbers to the right."""
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(
            str(cell).ljust(w) if i < 2 else str(cell).rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


if __name__ == "__main__":
    sys.exit(main())
