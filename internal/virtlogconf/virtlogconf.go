// Package virtlogconf is the size cap of guest serial logs, shared by the two places that
// configure virtlogd: the appliance image (imagebuild) and libvirtrun on development and CI
// machines. hostd routes each WorkSpace's serial console through virtlogd (a <log> on a
// null chardev), and virtlogd rotates the file at MaxSize keeping MaxBackups old ones, so a
// guest writing to its serial port forever uses at most Cap bytes of /perm.
package virtlogconf

import "fmt"

const (
	MaxSize    = 1 << 20 // bytes per file before virtlogd rotates it
	MaxBackups = 2       // rotated files kept (serial.log.0, serial.log.1)
	// Cap is the most disk one WorkSpace's serial log can use.
	Cap = MaxSize * (1 + MaxBackups)
)

// Settings are the virtlogd.conf lines that set the cap.
func Settings() string {
	return fmt.Sprintf("# guest serial logs: rotated at %d bytes, %d old files kept\nmax_size = %d\nmax_backups = %d\n",
		MaxSize, MaxBackups, MaxSize, MaxBackups)
}
