"""Static cloud and Vault credentials in the repository's own CI workflows.

``passport check`` reports each as a **warning with the fix** (never a mandatory violation: the
policy pack judges the stack, this judges the pipeline around it). A finding is a line of a file
under ``.github/workflows/`` that reads a ``secrets.*`` value named like a long-lived cloud,
Vault or Pulumi credential, or passes ``aws-access-key-id`` / ``aws-secret-access-key`` to an
action. Comment lines are ignored. The fix is always the same idea: the job asks GitHub for its
OIDC token (``permissions: id-token: write``) and exchanges it (docs/ci.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RULE = "ci-no-static-secrets"
DESCRIPTION = "CI workflows hold no static cloud or Vault credential: they log in with GitHub's OIDC token."
SEVERITY = "high"
WORKFLOWS = Path(".github") / "workflows"

_VAULT_FIX = ("log in with hashicorp/vault-action (method: jwt, path: jwt-github, role: passport-ci, "
              "jwtGithubAudience: agent-passport-ci) under `permissions: id-token: write`; set "
              "agent-passport:ci.github so `pulumi up` creates that role (docs/ci.md)")
_PULUMI_FIX = ("exchange the job's OIDC token with pulumi/auth-actions (organization, requested-token-type "
               "urn:pulumi:token-type:access_token:team, scope team:NAME) after trusting GitHub's issuer in "
               "Pulumi Cloud, or use an S3 backend reached through AWS OIDC (docs/ci.md)")
_AWS_FIX = ("use aws-actions/configure-aws-credentials with role-to-assume (the CiFederation role, "
            "agent-passport:ci with subsystems.aws) under `permissions: id-token: write`; delete the access key")
_GCP_FIX = ("use google-github-actions/auth with workload_identity_provider and service_account "
            "(Workload Identity Federation); delete the service account key")
_AZURE_FIX = ("use azure/login with client-id, tenant-id and subscription-id and a federated credential "
              "for the repository (ARM_USE_OIDC=true for Terraform/Pulumi); delete the client secret")

STATIC_SECRETS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"^(VAULT_TOKEN|VAULT_ROOT_TOKEN|VAULT_SECRET_ID|VAULT_ROLE_ID)$"), "Vault", _VAULT_FIX),
    (re.compile(r"^PULUMI_ACCESS_TOKEN$"), "Pulumi Cloud", _PULUMI_FIX),
    (re.compile(r"^(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|\w*_AWS_ACCESS_KEY_ID|"
                r"\w*_AWS_SECRET_ACCESS_KEY)$"), "AWS", _AWS_FIX),
    (re.compile(r"^(GOOGLE_CREDENTIALS|GOOGLE_APPLICATION_CREDENTIALS|GCP_SA_KEY|GCP_CREDENTIALS|"
                r"GCLOUD_SERVICE_KEY|GOOGLE_CLOUD_KEYFILE_JSON)$"), "Google Cloud", _GCP_FIX),
    (re.compile(r"^(AZURE_CLIENT_SECRET|ARM_CLIENT_SECRET|AZURE_CREDENTIALS|ARM_CLIENT_CERTIFICATE_PASSWORD)$"),
     "Azure", _AZURE_FIX),
)
_SECRET_REF = re.compile(r"""secrets\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*['"]([^'"]+)['"]\s*\])""")
_KEY_INPUT = re.compile(r"^\s*-?\s*(aws-access-key-id|aws-secret-access-key)\s*:")


@dataclass(frozen=True)
class WorkflowFinding:
    """One static credential a workflow line uses."""

    file: str
    """Path relative to the repository root (``.github/workflows/passport.yml``)."""
    line: int
    message: str
    fix: str


def scan_text(text: str, file: str) -> list[WorkflowFinding]:
    """Every static credential reference in one workflow's text, in line order."""
    found: list[WorkflowFinding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        key = _KEY_INPUT.match(line)
        if key:
            found.append(WorkflowFinding(file, number, f"passes `{key.group(1)}` to an action: a long-lived "
                                         "AWS access key stored as a secret", _AWS_FIX))
            continue
        for match in _SECRET_REF.finditer(line):
            name = (match.group(1) or match.group(2)).upper()
            for pattern, kind, fix in STATIC_SECRETS:
                if pattern.match(name):
                    found.append(WorkflowFinding(file, number, f"reads secrets.{name}: a long-lived {kind} "
                                                 "credential stored in the repository", fix))
                    break
    return found


def scan_workflows(root: Path) -> list[WorkflowFinding]:
    """Every finding in ``<root>/.github/workflows/*.yml|*.yaml`` (none without the folder)."""
    folder = root / WORKFLOWS
    if not folder.is_dir():
        return []
    found: list[WorkflowFinding] = []
    for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        found += scan_text(text, path.relative_to(root).as_posix())
    return found
