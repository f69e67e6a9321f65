package console

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

var bauds = map[int]uint32{9600: unix.B9600, 19200: unix.B19200, 38400: unix.B38400, 57600: unix.B57600, 115200: unix.B115200}

// OpenTTY opens /dev/NAME for the console: read-write, not as the controlling terminal,
// in raw mode (byte at a time, no echo, no signals) at baud (serial lines only; 0 keeps
// the speed).
func OpenTTY(name string, baud int) (*os.File, error) {
	f, err := os.OpenFile("/dev/"+name, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if err := Raw(f, baud); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return f, nil
}

// control runs fn on f's descriptor without f.Fd(), which would switch the file to
// blocking mode and end its read deadlines.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// Raw puts the terminal into the console's raw mode.
func Raw(f *os.File, baud int) error {
	return control(f, func(fd int) error { return raw(fd, baud) })
}

func raw(fd, baud int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag |= unix.OPOST | unix.ONLCR
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL
	if b, ok := bauds[baud]; ok {
		t.Cflag &^= unix.CBAUD
		t.Cflag |= b
		t.Ispeed, t.Ospeed = b, b
	}
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// Cooked puts the terminal into the line discipline a shell expects (echo, line
// editing, ^C).
func Cooked(f *os.File) error {
	return control(f, cooked)
}

func cooked(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag |= unix.ICRNL | unix.BRKINT
	t.Iflag &^= unix.INLCR | unix.IGNCR | unix.IXOFF
	t.Oflag |= unix.OPOST | unix.ONLCR
	t.Lflag |= unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ICANON | unix.ISIG | unix.IEXTEN | unix.ECHOCTL | unix.ECHOKE
	t.Cc[unix.VINTR], t.Cc[unix.VQUIT], t.Cc[unix.VERASE], t.Cc[unix.VKILL] = 3, 0x1c, 0x7f, 0x15
	t.Cc[unix.VEOF], t.Cc[unix.VSUSP], t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 4, 0x1a, 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// SetWinsize tells the terminal driver the screen is 80×24 (a serial line has no way
// to say), so full-screen programs in the shell lay out right.
func SetWinsize(f *os.File) {
	_ = control(f, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: Rows, Col: Cols})
	})
}
