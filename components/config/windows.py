"""Windows section: gMSA domain and credential spec policy."""

from __future__ import annotations

from pydantic import Field

from components.config.base import Section


class WindowsConfig(Section):
    """Active Directory settings for gMSA agents."""

    domain: str = Field(default="corp.example.com", description="AD DNS domain of the gMSAs.")
    netbios_domain: str = Field(default="CORP", description="NetBIOS domain name (DOMAIN\\account$).")
    allow_stored_credential_specs: bool = Field(
        default=False,
        description="Allow GMSACredentialSpecs whose CCG plugin reads a stored credential. "
        "Off: such credspecs are refused.",
    )
