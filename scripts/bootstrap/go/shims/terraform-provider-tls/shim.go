// Package shim is agent-passport's stand-in for the unpublished shim module of
// pulumi-tls: it exposes the Terraform TLS provider's constructor to the bridge.
package shim

import (
	fw "github.com/hashicorp/terraform-plugin-framework/provider"
	tls "github.com/hashicorp/terraform-provider-tls/internal/provider"
)

// NewProvider returns a new Terraform TLS (plugin-framework) provider.
func NewProvider() fw.Provider { return tls.New() }
