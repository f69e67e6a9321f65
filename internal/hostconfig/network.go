package hostconfig

import (
	"fmt"
	"sync"
)

// init.network is netcfg's desired state, and only netcfg's config package knows its rules.
// hostconfig does not import it (internal/ never depends on a component), so that package
// registers its validator here when it is linked in: hostd, init, netcfg and imagebuild
// link it, and their Load and Parse check init.network with it. zeroclient, which does not
// read init.network, does not link it.
var (
	networkMu        sync.RWMutex
	networkValidator func(network []byte) error
)

// RegisterNetworkValidator sets the check Parse applies to init.network (the section as a
// YAML document, as NetworkYAML gives it). netcfg's config package calls it from init.
func RegisterNetworkValidator(check func(network []byte) error) {
	networkMu.Lock()
	defer networkMu.Unlock()
	networkValidator = check
}

// validateNetwork checks init.network with the registered validator, if there is both.
func (c *Config) validateNetwork() error {
	networkMu.RLock()
	check := networkValidator
	networkMu.RUnlock()
	if check == nil || c.Init.Network.Kind == 0 {
		return nil
	}
	b, err := c.Init.NetworkYAML()
	if err != nil {
		return err
	}
	if err := check(b); err != nil {
		return fmt.Errorf("init.network: %w", err)
	}
	return nil
}
