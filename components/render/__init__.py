"""Pure renderers: Platform (or parts of it) in, text or plain dicts out. No Pulumi imports."""
