package vault

import (
	fw "github.com/hashicorp/terraform-plugin-framework/provider"

	"github.com/hashicorp/terraform-provider-vault/internal/provider/fwprovider"
)

// NewFrameworkProvider exports the plugin-framework half of the provider so
// the Pulumi bridge (another module) can mux it (agent-passport bootstrap).
func NewFrameworkProvider(primary interface{ Meta() interface{} }) fw.Provider {
	return fwprovider.New(primary)
}
