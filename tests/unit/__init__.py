"""Unit tests: models, renderers, CLI and tools, without a Pulumi program run."""
