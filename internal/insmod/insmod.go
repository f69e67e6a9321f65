// Package insmod inserts kernel module files: the appliance's init and the desktop's guest
// agent both load the modules their image ships, without modprobe.
package insmod

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Insert loads the module file at path (finit_module(2), no parameters). A module that is
// already loaded counts as loaded. Errors do not repeat path: callers name the module.
func Insert(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer unix.Close(fd)
	err = unix.FinitModule(fd, "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finit_module: %w", err)
	}
	return nil
}
