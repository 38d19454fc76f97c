# The floor for benchmarks/rego.py: the least a policy must do to allow the same request on the
# same data document — the keyed lookup (service, then SPIFFE ID) and the method, path (exact or
# segment-boundary prefix, query string dropped) and required-header checks. No reasons, no
# time windows, no revocation list, no shard documents, no decision object. Not shipped.
package floor

default allow := false

allow if {
	http := input.attributes.request.http
	entry := data.agentpassport.services[input.attributes.contextExtensions.service].principals[input.attributes.source.principal]
	path := split(http.path, "?")[0]
	some rule in entry.rules
	rule.methods[http.method]
	path_ok(rule, path)
	every name, value in rule.headers {
		http.headers[name] == value
	}
}

path_ok(rule, path) if rule.paths.exact[path]

path_ok(rule, path) if {
	some prefix in rule.paths.prefix
	startswith(path, concat("", [prefix, "/"]))
}

path_ok(rule, path) if {
	some prefix in rule.paths.prefix
	path == prefix
}
