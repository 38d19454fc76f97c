"""gMSA password rotation: the stack's interval in the DSC creation step, drift reporting for an
existing account, and the policy pack's limit on what a script creates."""

from __future__ import annotations

import importlib
import re
import sys

import pytest
from pydantic import ValidationError

from components.check import stack_policy_config
from components.config import build_stack_config, read_stack_file
from components.config.windows import WindowsConfig
from components.platform_model import Platform
from components.render.windows import GmsaAgent, compile_windows, render_dsc
from tests.support.tools import ROOT
from tests.unit.test_windows_render import (
    ledger,  # noqa: F401 - fixture
    literals,
    needs_parser,
    prod,  # noqa: F401 - fixture
    shape,
    ts_shape,
)

PACK = ROOT / "policy-packs/no-static-credentials"


def gmsa_pack() -> object:
    sys.path.insert(0, str(PACK))
    try:
        return importlib.import_module("policies.gmsa")
    finally:
        sys.path.remove(str(PACK))


def block(script: str, resource: str) -> str:
    """The text of one DSC resource block (``Script 'Name'`` .. its closing brace at that indent)."""
    start = script.index(resource)
    end = script.index("\n        }\n", start)
    return script[start:end]


def test_the_interval_defaults_to_one_day_and_is_a_stack_setting() -> None:
    assert WindowsConfig().gmsa_password_interval_days == 1
    values, lines, secrets = read_stack_file(ROOT / "stacks/Pulumi.prod.yaml")
    values["windows"] = {**values.get("windows", {}), "gmsaPasswordIntervalDays": 7}
    cfg = build_stack_config(values | {"environment": "prod"}, "stacks/Pulumi.prod.yaml", lines, secrets)
    assert cfg.windows.gmsa_password_interval_days == 7
    with pytest.raises(ValidationError):
        WindowsConfig(gmsa_password_interval_days=0)


def test_the_creation_step_creates_the_gmsa_with_the_interval(ledger: GmsaAgent) -> None:  # noqa: F811
    script = render_dsc(ledger, None, 1)
    create = block(script, "Script 'CreateGmsa'")
    assert "New-ADServiceAccount @newGmsa" in create
    assert "ManagedPasswordIntervalInDays              = [int]'1'" in create
    assert "DNSHostName                                = 'gmsa-ledgersync.corp.acme-corp.net'" in create
    assert "PrincipalsAllowedToRetrieveManagedPassword = @('LedgerSyncHosts')" in create
    assert "KerberosEncryptionType                     = 'AES256'" in create
    # The declarative resource keeps the other properties, after the account exists.
    assert "DependsOn                 = '[Script]CreateGmsa'" in block(script, "ADManagedServiceAccount 'Gmsa'")
    weekly = render_dsc(ledger, "OU=Agents,DC=corp,DC=acme-corp,DC=net", 7)
    assert "ManagedPasswordIntervalInDays              = [int]'7'" in block(weekly, "Script 'CreateGmsa'")
    assert "$newGmsa['Path'] = 'OU=Agents,DC=corp,DC=acme-corp,DC=net'" in weekly
    # Only the literal changes: the script's structure is the same whatever the interval.
    assert shape(render_dsc(ledger, None, 7)) == shape(render_dsc(ledger, None, 1))
    assert "7" in literals(weekly) and "1" not in literals(weekly)


def test_an_existing_account_with_another_interval_is_reported_never_kept(ledger: GmsaAgent) -> None:  # noqa: F811
    drift = block(render_dsc(ledger, None, 1), "Script 'GmsaPasswordInterval'")
    test_script = drift[drift.index("TestScript"):drift.index("SetScript")]
    assert "Get-ADServiceAccount -Identity 'gmsa-ledgersync' -Properties 'msDS-ManagedPasswordInterval'" in test_script
    assert "[int]$account.'msDS-ManagedPasswordInterval' -eq [int]'1'" in test_script
    set_script = drift[drift.index("SetScript"):]
    # The set step fails the resource (SSM marks the association non-compliant) with the fix.
    assert re.search(r"throw \(\"gMSA \{0\} changes its password every \{1\} days, and the stack asks for every "
                     r"\{2\} \"", set_script)
    assert "give the agent a new gmsaAccount in its manifest" in set_script
    assert "Remove-ADServiceAccount" in set_script and "Set-ADServiceAccount" not in set_script
    assert set_script.rstrip().endswith("DependsOn  = '[Script]CreateGmsa'")
    # The host keeps working meanwhile: installing the gMSA does not wait for the interval check.
    assert "GmsaPasswordInterval" not in block(render_dsc(ledger, None, 1), "Script 'InstallGmsa'")


def test_a_gmsa_in_another_domain_is_read_from_that_domain(ledger: GmsaAgent) -> None:  # noqa: F811
    foreign = GmsaAgent(ledger.agent, ledger.windows, "emea.acme-corp.net", ledger.netbios_domain, False)
    script = render_dsc(foreign, None, 1)
    reads = re.findall(r"Get-ADServiceAccount -Identity 'gmsa-ledgersync'([^\n]*)", script)
    assert len(reads) == 5 and all(r.startswith(" -Server 'emea.acme-corp.net'") for r in reads)
    assert "$newGmsa['Server'] = 'emea.acme-corp.net'" in script


@needs_parser
def test_the_rendered_script_parses_as_powershell(ledger: GmsaAgent) -> None:  # noqa: F811
    foreign = GmsaAgent(ledger.agent, ledger.windows, "emea.acme-corp.net", ledger.netbios_domain, False)
    for g in (ledger, foreign):
        ts_shape(render_dsc(g, "OU=Agents,DC=corp,DC=acme-corp,DC=net", 3))  # asserts no syntax error


def test_the_pack_flags_an_interval_above_the_stacks_limit(prod: Platform) -> None:  # noqa: F811
    pack = gmsa_pack()
    intervals = pack.intervals  # type: ignore[attr-defined]
    plan = compile_windows(prod)
    ((_, script),) = plan.scripts
    assert list(intervals(script)) == [1]  # exactly the creation step's value
    (g,) = plan.agents
    assert list(intervals(render_dsc(g, None, 30))) == [30]
    assert list(intervals("New-ADServiceAccount -Name 'x' -ManagedPasswordIntervalInDays 14")) == [14]
    # The stack's limit is the pack's limit.
    assert stack_policy_config(prod.config)["gmsa-password-interval"] == {"maxGmsaPasswordIntervalDays": 1}
