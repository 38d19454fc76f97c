"""CI section: the project's own pipeline authenticates with GitHub's OIDC token, holds no secret.

Off by default. With ``github`` set, the program renders (components/ci.py) a Vault JWT auth
backend trusting GitHub Actions' issuer and one read-only role bound to the repository and its
refs (and, if asked, its pull requests), and on AWS an IAM role the workflow assumes with
``aws-actions/configure-aws-credentials`` (web identity, no access key).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from components.config.base import Section
from components.config.vault import MAX_TOKEN_TTL_SECONDS, MountPath
from components.durations import Duration, seconds

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
"""Issuer (``iss``) of GitHub Actions' OIDC tokens."""
AWS_AUDIENCE = "sts.amazonaws.com"
"""Audience aws-actions/configure-aws-credentials requests (its default)."""

Repository = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$"),
    Field(description="GitHub repository as OWNER/NAME (the token's repository claim)."),
]
GitRef = Annotated[
    str,
    StringConstraints(pattern=r"^refs/(heads|tags)/[A-Za-z0-9._/-]{1,200}$"),
    Field(description="A full Git ref (refs/heads/main, refs/tags/v1.2.3); exact, no wildcards."),
]
IAM_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/token\.actions\.githubusercontent\.com$"
KMS_KEY_ARN = r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$"


class GithubCi(Section):
    """Which GitHub workflow runs may log in, and with which audience."""

    repository: Repository
    refs: list[GitRef] = Field(
        default_factory=lambda: ["refs/heads/main"],
        min_length=1,
        description="Refs whose push (and workflow_dispatch/schedule) runs may log in; each becomes "
        "the subject repo:OWNER/NAME:ref:REF.",
    )
    pull_requests: bool = Field(
        default=False,
        description="Also let pull_request runs log in (subject repo:OWNER/NAME:pull_request). "
        "GitHub gives no OIDC token to pull requests from forks; the access is read-only.",
    )
    vault_audience: str = Field(
        default="agent-passport-ci",
        pattern=r"^[A-Za-z0-9._:/-]{1,255}$",
        description="Audience the workflow requests for Vault (hashicorp/vault-action "
        "jwtGithubAudience); the role's bound_audiences.",
    )


class CiVault(Section):
    """The Vault side: a JWT auth mount for GitHub and one read-only role."""

    mount: MountPath = Field(default="jwt-github", description="Mount path of GitHub's JWT auth backend.")
    role: str = Field(
        default="passport-ci", pattern=r"^[a-z0-9]([a-z0-9_-]{0,62}[a-z0-9])?$",
        description="Role name the workflow logs in with (vault-action role).",
    )
    token_ttl: Duration = Field(default="10m", description="Token TTL (≤15m; also its max TTL: no renewal).")
    extra_read_paths: list[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+*/-]{1,200}$")]
    ] = Field(
        default_factory=list,
        description="More Vault paths the pipeline may read and list (read-only, nothing else).",
    )

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if seconds(self.token_ttl) > MAX_TOKEN_TTL_SECONDS:
            raise ValueError(f"tokenTtl {self.token_ttl} is above 15m; a pipeline job logs in again")
        if seconds(self.token_ttl) < 60:
            raise ValueError(f"tokenTtl {self.token_ttl} is below Vault's useful minimum of 1m")
        return self


class CiAws(Section):
    """The AWS side: GitHub's OIDC provider and one preview role."""

    oidc_provider_arn: str | None = Field(
        default=None,
        pattern=IAM_ARN,
        description="Existing IAM OIDC provider for token.actions.githubusercontent.com (an "
        "account holds one per issuer). Default: the program creates it.",
    )
    role_name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9+=,.@_-]{1,64}$",
        description="IAM role name. Default: agentpassport-ci-<stack>.",
    )
    max_session_duration: Literal[3600] = Field(
        default=3600, description="Longest session of the role, in seconds (one hour, fixed)."
    )
    state_bucket: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="S3 bucket of a self-managed Pulumi backend (s3://BUCKET): the role may read "
        "its .pulumi/ state and write only the stack locks a preview takes.",
    )
    secrets_kms_key_arn: str | None = Field(
        default=None, pattern=KMS_KEY_ARN,
        description="KMS key of the stack's secrets provider (awskms://): kms:Decrypt only.",
    )


class CiConfig(Section):
    """A pipeline without static secrets: GitHub OIDC into Vault (and AWS)."""

    github: GithubCi | None = Field(default=None, description="The repository whose workflows run Agent "
                                    "Passport. Unset: nothing is rendered.")
    vault: CiVault = Field(default_factory=CiVault, description="Vault JWT auth for the pipeline.")
    aws: CiAws = Field(default_factory=CiAws, description="AWS web-identity role for the pipeline.")

    @property
    def enabled(self) -> bool:
        return self.github is not None
