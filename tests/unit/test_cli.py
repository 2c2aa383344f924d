import json

from darkroom.cli import main


def test_stack_outputs_name_the_tables(aws, monkeypatch, capsys):
    """`--stack NAME` finds the tables from a deployed stack's outputs (here a moto stack)."""
    from darkroom import config

    template = {
        "Resources": {"Marker": {"Type": "AWS::SSM::Parameter",
                                 "Properties": {"Name": "marker", "Type": "String", "Value": "x"}}},
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
