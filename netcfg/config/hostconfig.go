package config

import "deskhost/internal/hostconfig"

// The host config's init.network is this package's Config. hostconfig cannot import a
// component, so this registers netcfg's rules with it: wherever this package is linked in
// (hostd, init, netcfg, imagebuild), hostconfig.Load and Parse refuse an init.network that
// netcfg would refuse, with netcfg's error.
func init() {
	hostconfig.RegisterNetworkValidator(func(b []byte) error {
		c, err := Decode(b)
		if err != nil {
			return err
		}
		_, err = Validate(c)
		return err
	})
}
