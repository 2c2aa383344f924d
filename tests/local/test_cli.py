import json

import pytest

from darkroom.cli import main


def test_stack_outputs_name_the_tables(aws, monkeypatch, capsys):
    """`--stack NAME` finds the tables from a deployed stack's outputs (here a moto stack)."""
    from darkroom import config

    template = {
        "Resources": {
            "Marker": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": "marker", "Type": "String", "Value": "x"}}
        },
        "Outputs": {
            "TenantsTableName": {"Value": aws.physical_name("TenantsTable")},
            "UsageTableName": {"Value": aws.physical_name("UsageTable")},
        },
    }
    config.client("cloudformation").create_stack(StackName="darkroom-prod", TemplateBody=json.dumps(template))
    monkeypatch.setenv("DARKROOM_TENANTS_TABLE", "wrong-table")  # the stack's outputs win
    assert main(["tenants", "create", "acme", "--images-per-minute", "7", "--stack", "darkroom-prod", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["images_per_minute"] == 7
    assert main(["tenants", "list", "--stack", "darkroom-prod", "--json"]) == 0
    assert [t["tenant_id"] for t in json.loads(capsys.readouterr().out)] == [created["tenant_id"]]


def test_errors_are_one_line_and_exit_1(aws, capsys):
    assert main(["keys", "issue", "tnt_missing"]) == 1
    assert capsys.readouterr().err.strip() == "darkroom: No tenant tnt_missing."


def test_issue_prints_the_key_once_and_list_never_does(aws, capsys):
    main(["tenants", "create", "acme", "--json"])
    tenant_id = json.loads(capsys.readouterr().out)["tenant_id"]
    main(["keys", "issue", tenant_id, "--json"])
    key = json.loads(capsys.readouterr().out)["key"]
    main(["keys", "list", tenant_id])
    listing = capsys.readouterr().out
    assert key[:8] in listing and key not in listing
    main(["usage", tenant_id])
    assert capsys.readouterr().out.strip() == "no usage"


def _seed_usage(svc, tenant_id: str) -> None:
    from datetime import UTC, datetime

    from darkroom.metering import UsageEvent

    for request_id, day, model, images, tokens, cost in [
        ("r1", "2026-11-03", "local-image", 2, 1056, 0.021145),
        ("r2", "2026-11-22", "local-image", 5, 3168, 0.1273),
        ("r3", "2026-11-22", "local-text", 0, 40, 0.00002),
        ("r4", "2026-11-22", "local-image", 1, 1200, 0.05),
        ("r5", "2026-12-01", "local-image", 1, 1, 0.5),  # outside events/usage.json's November
    ]:
        svc.meter.record(
            UsageEvent(
                request_id=request_id,
                tenant_id=tenant_id,
                operation="generate",
                model=model,
                size="512x512",
                quality="medium",
                images=images,
                input_text_tokens=20,
                input_image_tokens=0,
                output_tokens=tokens,
                cost_usd=cost,
                at=datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC),
            )
        )


def _api_usage() -> dict:
    from lambda_harness import invoke, load_event

    status, _, body = invoke("usage", load_event("usage"))  # 2026-11-01..2026-11-30, the event's key
    assert status == 200, body
    return body


NUMBERS = ("requests", "images", "input_tokens", "output_tokens")


def test_usage_csv_has_the_apis_numbers(tenant, svc, capsys):
    import csv
    import io

    _seed_usage(svc, tenant.tenant_id)
    api = _api_usage()
    assert len(api["data"]) == 3
    assert main(["usage", tenant.tenant_id, "--csv", "--start-date", "2026-11-01", "--end-date", "2026-11-30"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "date,model,requests,images,input_tokens,output_tokens,cost_usd"
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["date"], r["model"]) for r in rows] == [(d["date"], d["model"]) for d in api["data"]]
    for row, expected in zip(rows, api["data"], strict=True):
        assert {k: int(row[k]) for k in NUMBERS} == {k: expected[k] for k in NUMBERS}
        assert float(row["cost_usd"]) == expected["cost_usd"]
    assert [r["cost_usd"] for r in rows] == ["0.021145", "0.177300", "0.000020"]  # never 2e-05
    assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(api["totals"]["cost_usd"])
    # --json: the API's rows
    assert main(["usage", tenant.tenant_id, "--json", "--since", "2026-11-01", "--end-date", "2026-11-30"]) == 0
    assert json.loads(capsys.readouterr().out) == api["data"]


def test_usage_table_is_aligned_with_a_total(tenant, svc, capsys):
    _seed_usage(svc, tenant.tenant_id)
    api = _api_usage()
    assert main(["usage", tenant.tenant_id, "--start-date", "2026-11-01", "--end-date", "2026-11-30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "date",
        "model",
        "requests",
        "images",
        "input",
        "tokens",
        "output",
        "tokens",
        "cost",
        "(USD)",
    ]
    assert len(lines) == 1 + len(api["data"]) + 1
    assert len({len(line) for line in lines}) == 1  # numbers right-aligned under their headings
    for line, expected in zip(lines[1:-1], api["data"], strict=True):
        date_, model, *numbers, cost = line.split()
        assert (date_, model) == (expected["date"], expected["model"])
        assert [int(n.replace(",", "")) for n in numbers] == [expected[k] for k in NUMBERS]
        assert float(cost) == expected["cost_usd"]
    label, *numbers, cost = lines[-1].split()
    assert label == "total" and [int(n.replace(",", "")) for n in numbers] == [api["totals"][k] for k in NUMBERS]
    assert float(cost) == api["totals"]["cost_usd"]
    assert "2026-12-01" not in "\n".join(lines)


def test_usage_dates_are_checked_like_the_apis(tenant, capsys):
    # A bad value exits 2, as argparse's own refusals do (an unknown tenant exits 1).
    assert main(["usage", tenant.tenant_id, "--start-date", "2026-11-31"]) == 2
    assert capsys.readouterr().err.strip() == (
        "darkroom: Invalid value for 'start_date': expected a date as YYYY-MM-DD."
    )
    assert main(["usage", tenant.tenant_id, "--start-date", "2026-11-02", "--end-date", "2026-11-01"]) == 2
    assert "'start_date' must not be after 'end_date'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["usage", tenant.tenant_id, "--csv", "--json"])


def test_dev_certificate_issues_a_chain_for_the_stacks_kms_key_into_its_parameter(aws, monkeypatch, capsys):
    """`darkroom credentials dev-certificate --stack NAME`: the stack's KMS key (an output) gets a certificate from
    the development root, written to the stack's certificate-chain parameter (a parameter): what a fresh deployment
    needs before it can sign (README, "Content credentials: certificates")."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from darkroom import config
    from darkroom.local.dev_credentials import ensure

    key_id = config.client("kms").create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    template = {
        "Parameters": {"ContentCredentialsCertChainParameter": {"Type": "String"}},
        "Resources": {
            "Marker": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": "m", "Type": "String", "Value": "x"}}
        },
        "Outputs": {"ContentCredentialsKeyArn": {"Value": key_id}},
    }
    config.client("cloudformation").create_stack(
        StackName="darkroom-cc",
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": "ContentCredentialsCertChainParameter", "ParameterValue": "darkroom/chain"}],
    )
    assert main(["credentials", "dev-certificate", "--stack", "darkroom-cc"]) == 0
    assert "darkroom/chain" in capsys.readouterr().out
    chain = config.client("ssm").get_parameter(Name="darkroom/chain")["Parameter"]["Value"].encode()
    leaf, root = x509.load_pem_x509_certificates(chain)
    kms_public = config.client("kms").get_public_key(KeyId=key_id)["PublicKey"]
    assert (
        leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        == kms_public
    )
    assert leaf.issuer == root.subject
    assert root.public_bytes(serialization.Encoding.PEM) == ensure().root_file.read_bytes()


def test_usage_without_a_tenant_is_every_tenants_billing_export(tenant, svc, capsys):
    """The admin API's export (GET /admin/v1/usage), from the same use case: CSV with the tenant's id."""
    import csv
    import io

    other = svc.directory.create_tenant("other")
    _seed_usage(svc, tenant.tenant_id)
    _seed_usage(svc, other.tenant_id)
    assert main(["usage", "--start-date", "2026-11-01", "--end-date", "2026-11-30"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {row["tenant_id"] for row in rows} == {tenant.tenant_id, other.tenant_id}
    mine = [(r["date"], r["model"], r["cost_usd"]) for r in rows if r["tenant_id"] == tenant.tenant_id]
    api = _api_usage()["data"]  # the tenant's own view of the same month
    assert mine == [(d["date"], d["model"], f"{d['cost_usd']:.6f}") for d in api]
    assert main(["usage", "--json", "--start-date", "2026-11-01", "--end-date", "2026-11-30"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(rows)


def test_keys_can_expire(aws, capsys):
    main(["tenants", "create", "acme", "--json"])
    tenant_id = json.loads(capsys.readouterr().out)["tenant_id"]
    assert main(["keys", "issue", tenant_id, "--expires", "2031-01-31T00:00:00Z", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["expires_at"] == "2031-01-31T00:00:00Z"
    assert main(["keys", "issue", tenant_id, "--expires", "2020-01-01"]) == 2  # the past: a bad value
    assert "'expires_at' must be in the future." in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["keys", "issue", tenant_id, "--expires", "next tuesday"])
