"""Windows section: gMSA domain, DSC delivery and credential spec policy.

Every value here ends up inside a generated PowerShell script or a Kubernetes credential
spec, so each one is constrained to the characters its Active Directory counterpart allows
(and is still quoted by :func:`components.render.windows.ps_quote` when rendered).
"""

from __future__ import annotations

from pydantic import Field

from components.config.base import Section

DNS_DOMAIN = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
NETBIOS_DOMAIN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}$"
DOMAIN_SID = r"^S-1-5-21-\d{1,10}-\d{1,10}-\d{1,10}$"
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
OU_DN = r"^(OU|CN)=[A-Za-z0-9 ._-]{1,64}(,(OU|CN)=[A-Za-z0-9 ._-]{1,64})*(,DC=[A-Za-z0-9-]{1,63})+$"
SSM_SCHEDULE = (
    r"^(rate\((30|[3-9][0-9]|[1-9][0-9]{2,}) minutes\)"
    r"|rate\([1-9][0-9]* (hour|hours|day|days)\)"
    r"|cron\([0-9A-Za-z ,*?/#-]{1,200}\))$"
)


class WindowsConfig(Section):
    """Active Directory settings for gMSA agents."""

    domain: str = Field(
        default="corp.example.com",
        pattern=DNS_DOMAIN,
        max_length=253,
        description="AD DNS domain of the gMSAs (e.g. corp.acme.com). Strict stacks refuse "
        "placeholders such as example.com.",
    )
    netbios_domain: str = Field(
        default="CORP",
        pattern=NETBIOS_DOMAIN,
        description="NetBIOS domain name: the pool identity is DOMAIN\\account$.",
    )
    forest_domain: str | None = Field(
        default=None,
        pattern=DNS_DOMAIN,
        max_length=253,
        description="DNS name of the forest root domain (credential spec DnsTreeName). "
        "Default: domain.",
    )
    domain_sid: str | None = Field(
        default=None,
        pattern=DOMAIN_SID,
        description="SID of the AD domain ((Get-ADDomain).DomainSID), needed in the "
        "GMSACredentialSpec of agents that run as Windows pods.",
    )
    domain_guid: str | None = Field(
        default=None,
        pattern=GUID,
        description="objectGUID of the AD domain ((Get-ADDomain).ObjectGUID), needed in the "
        "GMSACredentialSpec of agents that run as Windows pods.",
    )
    gmsa_path: str | None = Field(
        default=None,
        pattern=OU_DN,
        description="Distinguished name of the OU the gMSAs are created in (e.g. "
        "OU=Agents,DC=corp,DC=acme,DC=com). Default: the domain's Managed Service Accounts "
        "container.",
    )
    ssm_schedule: str = Field(
        default="rate(30 minutes)",
        pattern=SSM_SCHEDULE,
        description="How often AWS Systems Manager re-applies each agent's DSC configuration "
        "(drift correction): rate(N minutes) with N >= 30, rate(N hours|days) or cron(...).",
    )
    gmsa_password_interval_days: int = Field(
        default=1,
        ge=1,
        le=3650,
        description="Days between the automatic gMSA password changes "
        "(New-ADServiceAccount -ManagedPasswordIntervalInDays). Active Directory fixes the "
        "interval when it creates the account: the DSC script creates new gMSAs with it and "
        "reports an existing account whose interval differs (it is never silently kept). The "
        "policy pack refuses a value above limits.maxGmsaPasswordIntervalDays.",
    )
    egress_sds_pipe: str = Field(
        default="\\\\.\\pipe\\spire-agent\\public\\api",
        pattern=r"^\\\\\.\\pipe\\[A-Za-z0-9._\\-]{1,200}$",
        description="The SPIRE agent's Workload API (SDS) named pipe on Windows hosts, as the "
        "Windows Envoy egress proxy addresses it (SPIRE's default experimental.named_pipe_name "
        "\\spire-agent\\public\\api).",
    )
    envoy_exe: str = Field(
        default="C:\\Program Files\\envoy\\envoy.exe",
        pattern=r"^[A-Za-z]:\\[A-Za-z0-9 ._()\\-]{1,240}\.exe$",
        description="Path of envoy.exe on the Windows hosts (installed by your own software "
        "distribution; the DSC script checks it is there and never downloads anything).",
    )
    allow_stored_credential_specs: bool = Field(
        default=False,
        description="Allow GMSACredentialSpecs whose CCG plugin reads a stored credential "
        "(HostAccountConfig: a user name and password kept in a secret store). Off: such "
        "credspecs are refused; the hosts' own domain membership retrieves the gMSA password.",
    )

    @property
    def tree_domain(self) -> str:
        return self.forest_domain or self.domain
