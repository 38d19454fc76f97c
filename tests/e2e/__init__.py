"""End-to-end tests: real engines started on 127.0.0.1 by each test, bounded and stopped."""
