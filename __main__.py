"""Pulumi entry point: load the stack's config and the agent manifests, build the platform."""

from components.program import main

main()
