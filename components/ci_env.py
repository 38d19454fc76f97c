"""What the workflow needs to log in to one stack: ``python -m components.ci_env --stack ENV``.

Prints ``key=value`` lines for ``$GITHUB_OUTPUT`` from the stack file's ``agent-passport:ci``
section (offline, no credential): the Vault address, mount, role and audience when the stack
renders the pipeline's Vault role, the AWS region when it renders the AWS role. Values are
empty when the stack does not render them, so the workflow skips that login.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.config import StackConfig, load_stack_config


def login_settings(cfg: StackConfig) -> dict[str, str]:
    github = cfg.ci.github
    vault_on = github is not None and cfg.subsystems.vault
    aws_on = github is not None and cfg.subsystems.aws
    return {
        "enabled": "true" if github is not None else "false",
        "vault_addr": cfg.vault.address if vault_on else "",
        "vault_mount": cfg.ci.vault.mount if vault_on else "",
        "vault_role": cfg.ci.vault.role if vault_on else "",
        "vault_audience": github.vault_audience if vault_on and github is not None else "",
        "aws_region": cfg.aws.region if aws_on else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.ci_env", description=__doc__)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--root", default=".")
    args = parser.parse_args(argv)
    settings = login_settings(load_stack_config(args.stack, Path(args.root).resolve()))
    sys.stdout.write("".join(f"{k}={v}\n" for k, v in settings.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
