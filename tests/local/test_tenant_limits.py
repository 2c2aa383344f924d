"""Tenant limits an operator sets: the deployment's defaults (DARKROOM_DEFAULT_*, the stack's Default*
parameters) for tenants created without limits, and `darkroom tenants set-limits` afterwards."""

from __future__ import annotations

import json

import pytest

from darkroom import config, services
from darkroom.api.errors import NotFound
from darkroom.cli import main
from darkroom.tenancy import Limits


@pytest.fixture
def defaults(aws, monkeypatch):
    """A deployment whose default limits are 3 images a minute, 40 a day, 9 requests a minute."""
    monkeypatch.setenv("DARKROOM_DEFAULT_IMAGES_PER_MINUTE", "3")
    monkeypatch.setenv("DARKROOM_DEFAULT_IMAGES_PER_DAY", "40")
    monkeypatch.setenv("DARKROOM_DEFAULT_REQUESTS_PER_MINUTE", "9")
    services.reset()
    return Limits(images_per_minute=3, images_per_day=40, requests_per_minute=9)


def test_a_tenant_created_without_limits_gets_the_deployments_defaults(defaults):
    directory = services.services().directory
    assert directory.default_limits == defaults
    created = directory.create_tenant("acme")
    assert created.limits == defaults and directory.get_tenant(created.tenant_id).limits == defaults
    explicit = Limits(images_per_minute=1, images_per_day=2, requests_per_minute=3)
    assert directory.create_tenant("globex", explicit).limits == explicit


def test_without_settings_the_defaults_are_limits_defaults(aws):
    assert services.services().directory.default_limits == Limits()


def test_cli_create_fills_what_is_not_given_from_the_defaults(defaults, capsys):
    assert main(["tenants", "create", "acme", "--images-per-day", "70", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["images_per_minute"], row["images_per_day"], row["requests_per_minute"]) == (3, 70, 9)


def test_set_limits_changes_only_the_given_limits(aws, capsys):
    directory = services.services().directory
    tenant = directory.create_tenant("acme", Limits(images_per_minute=5, images_per_day=50, requests_per_minute=10))
    assert main(["tenants", "set-limits", tenant.tenant_id, "--images-per-minute", "8", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["images_per_minute"], row["images_per_day"], row["requests_per_minute"]) == (8, 50, 10)
    assert directory.get_tenant(tenant.tenant_id).limits == Limits(8, 50, 10)
    assert (
        main(["tenants", "set-limits", tenant.tenant_id, "--images-per-day", "900", "--requests-per-minute", "120"])
        == 0
    )
    text = capsys.readouterr().out
    assert "ipm=8 ipd=900 rpm=120" in text and "takes effect within" in text
    assert directory.get_tenant(tenant.tenant_id).limits == Limits(8, 900, 120)
    assert directory.get_tenant(tenant.tenant_id).status == "active"


def test_set_limits_refuses_nothing_zero_and_unknown_tenants(aws, capsys):
    tenant = services.services().directory.create_tenant("acme")
    assert main(["tenants", "set-limits", tenant.tenant_id]) == 2
    assert "at least one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tenants", "set-limits", tenant.tenant_id, "--images-per-minute", "0"])
    assert main(["tenants", "set-limits", "tnt_missing", "--images-per-minute", "4"]) == 1
    assert capsys.readouterr().err.strip().endswith("darkroom: No tenant tnt_missing.")
    with pytest.raises(NotFound):
        services.services().directory.set_limits("tnt_missing", images_per_day=4)
    with pytest.raises(ValueError):
        services.services().directory.set_limits(tenant.tenant_id)


def test_stack_parameters_are_the_clis_default_limits(aws, monkeypatch, capsys):
    """`--stack NAME` reads the stack's Default* parameters as well as its table outputs (a moto stack here)."""
    template = {
        "Parameters": {
            name: {"Type": "Number"}
            for name in ("DefaultImagesPerMinute", "DefaultImagesPerDay", "DefaultRequestsPerMinute")
        },
        "Resources": {
            "Marker": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": "marker", "Type": "String", "Value": "x"}}
        },
        "Outputs": {"TenantsTableName": {"Value": aws.physical_name("TenantsTable")}},
    }
    config.client("cloudformation").create_stack(
        StackName="darkroom-prod",
        TemplateBody=json.dumps(template),
        Parameters=[
            {"ParameterKey": "DefaultImagesPerMinute", "ParameterValue": "6"},
            {"ParameterKey": "DefaultImagesPerDay", "ParameterValue": "60"},
            {"ParameterKey": "DefaultRequestsPerMinute", "ParameterValue": "16"},
        ],
    )
    monkeypatch.setenv("DARKROOM_DEFAULT_IMAGES_PER_MINUTE", "1")  # the stack's parameters win
    assert main(["tenants", "create", "acme", "--stack", "darkroom-prod", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["images_per_minute"], row["images_per_day"], row["requests_per_minute"]) == (6, 60, 16)
