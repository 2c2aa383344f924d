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

from darkroom import config, services

_STACK_OUTPUTS = {
    "TenantsTableName": "DARKROOM_TENANTS_TABLE",
    "RateLimitsTableName": "DARKROOM_RATE_LIMITS_TABLE",
    "UsageTableName": "DARKROOM_USAGE_TABLE",
    "ImagesBucketName": "DARKROOM_IMAGES_BUCKET",
}
# Template parameters a deployed stack was given: the limits of tenants created without --images-per-minute & co.
_STACK_PARAMETERS = {
    "DefaultImagesPerMinute": "DARKROOM_DEFAULT_IMAGES_PER_MINUTE",
    "DefaultImagesPerDay": "DARKROOM_DEFAULT_IMAGES_PER_DAY",
    "DefaultRequestsPerMinute": "DARKROOM_DEFAULT_REQUESTS_PER_MINUTE",
}


def _limit(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a limit is at least 1")
    return value


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

    def command(group, name: str, **kwargs) -> argparse.ArgumentParser:
        return group.add_parser(name, parents=[common], **kwargs)

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
    set_limits = command(tenants, "set-limits", help="change a tenant's limits (the ones given; the others stay)")
    set_limits.add_argument("tenant_id")
    set_limits.add_argument("--images-per-minute", type=_limit)
    set_limits.add_argument("--images-per-day", type=_limit)
    set_limits.add_argument("--requests-per-minute", type=_limit)

    keys = add("keys", help="issue, list and revoke API keys").add_subparsers(dest="action", required=True)
    command(keys, "issue").add_argument("tenant_id")
    command(keys, "list").add_argument("tenant_id")
    command(keys, "revoke").add_argument("key_id")

    usage = command(commands, "usage", help="a tenant's usage by day (UTC) and model, as GET /v1/usage shows it")
    usage.add_argument("tenant_id")
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


def _print(args, rows: list[dict] | dict, text: str) -> None:
    print(json.dumps(rows, indent=2) if args.json else text)


def _interrupt(signum, frame) -> None:
    signal.signal(signum, signal.SIG_IGN)  # once: a second TERM must not interrupt the clean-up
    raise KeyboardInterrupt


def _serve(args) -> None:
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
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "csv", False) and args.json:
        parser.error("choose one of --csv and --json")
    if args.command == "serve":
        _serve(args)
        return 0
    if getattr(args, "stack", None):
        _use_stack(args.stack)
    from darkroom.api.errors import ApiError
    from darkroom.tenancy import Limits

    svc = services.services()
    directory = svc.directory
    try:
        if args.command == "tenants" and args.action == "create":
            defaults = directory.default_limits  # the stack's Default* parameters (DARKROOM_DEFAULT_*)
            tenant = directory.create_tenant(
                args.name,
                Limits(
                    images_per_minute=args.images_per_minute or defaults.images_per_minute,
                    images_per_day=args.images_per_day or defaults.images_per_day,
                    requests_per_minute=args.requests_per_minute or defaults.requests_per_minute,
                ),
            )
            _print(args, _tenant_row(tenant), f"{tenant.tenant_id}\t{tenant.name}")
        elif args.command == "tenants" and args.action == "list":
            rows = [_tenant_row(t) for t in directory.list_tenants()]
            _print(
                args,
                rows,
                "\n".join(
                    f"{r['tenant_id']}\t{r['name']}\t{r['status']}\tipm={r['images_per_minute']} "
                    f"ipd={r['images_per_day']} rpm={r['requests_per_minute']}"
                    for r in rows
                ),
            )
        elif args.command == "tenants" and args.action == "set-limits":
            changes = {
                name: getattr(args, name) for name in ("images_per_minute", "images_per_day", "requests_per_minute")
            }
            if all(value is None for value in changes.values()):
                print(
                    "darkroom: give at least one of --images-per-minute, --images-per-day, --requests-per-minute",
                    file=sys.stderr,
                )
                return 2
            tenant = directory.set_limits(args.tenant_id, **changes)
            limits = tenant.limits
            _print(
                args,
                _tenant_row(tenant),
                f"{tenant.tenant_id}\tipm={limits.images_per_minute} "
                f"ipd={limits.images_per_day} rpm={limits.requests_per_minute} (takes effect within "
                f"{svc.settings.key_cache_seconds:g}s)",
            )
        elif args.command == "tenants":
            tenant = directory.set_status(args.tenant_id, "suspended" if args.action == "suspend" else "active")
            _print(args, _tenant_row(tenant), f"{tenant.tenant_id}\t{tenant.status}")
        elif args.command == "keys" and args.action == "issue":
            key, secret = directory.issue_key(args.tenant_id)
            row = {"key_id": key.key_id, "tenant_id": key.tenant_id, "key": secret}
            _print(args, row, f"{key.key_id}\t{secret}\n(shown once: store it now; darkroom keeps only its hash)")
        elif args.command == "keys" and args.action == "list":
            rows = [vars(k) for k in directory.list_keys(args.tenant_id)]
            _print(
                args,
                rows,
                "\n".join(f"{r['key_id']}\t{r['prefix']}...\t{r['status']}\t{r['created_at']}" for r in rows),
            )
        elif args.command == "keys" and args.action == "revoke":
            key = directory.revoke_key(args.key_id)
            _print(
                args, vars(key), f"{key.key_id}\t{key.status} (takes effect within {svc.settings.key_cache_seconds:g}s)"
            )
        elif args.command == "usage":
            _usage(args, svc)
    except ApiError as exc:
        print(f"darkroom: {exc.message}", file=sys.stderr)
        return 1
    return 0


_USAGE_COLUMNS = ("date", "model", "requests", "images", "input_tokens", "output_tokens", "cost_usd")
_USAGE_HEADINGS = ("date", "model", "requests", "images", "input tokens", "output tokens", "cost (USD)")


def _usage(args, svc) -> None:
    """The rows GET /v1/usage answers (one function: ``UsageMeter.by_day_and_model``), as a table, CSV or JSON."""
    from darkroom.api.usage import usage_list
    from darkroom.metering import usage_window

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


def _usage_cells(row: dict) -> list[str]:
    return [row["date"], row["model"], *(f"{row[c]:,}" for c in _USAGE_COLUMNS[2:-1]), f"{row['cost_usd']:.6f}"]


def _table(lines: list) -> str:
    """Aligned columns: the first two (date, model) to the left, the numbers to the right."""
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(
            str(cell).ljust(w) if i < 2 else str(cell).rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def _tenant_row(tenant) -> dict:
    return {
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "status": tenant.status,
        "created_at": tenant.created_at,
        **vars(tenant.limits),
    }


if __name__ == "__main__":
    sys.exit(main())
