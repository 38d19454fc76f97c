"""Graph tests: the Pulumi program run under the SDK's mocks, its resource graph checked."""
