"""Helpers shared by the test tiers: where the real tools are, free ports, bounded waits."""
