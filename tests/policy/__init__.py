"""Policy tests: the policy pack and the generated Rego, evaluated directly or by OPA."""
