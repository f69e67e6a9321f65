package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"deskhost/internal/argon2id"
)

// stdin is where console-password reads the password (tests replace it).
var stdin io.Reader = os.Stdin

// runConsolePassword prints the argon2id hash of a console password for a host config's
// init.console.passwordHash. The password is read from standard input (twice, without
// echo, on a terminal), never from the command line, where other users would see it.
func runConsolePassword(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("imagebuild console-password", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: imagebuild console-password < password")
		fmt.Fprintln(stderr, "\nReads a console password from standard input and prints init.console.passwordHash")
		fmt.Fprintln(stderr, "for a host config. A hash can be guessed at offline: put it in a config fetched with")
		fmt.Fprintln(stderr, "deskhost.config= or kept on /perm, not in one baked into an image (build refuses that).")
	}
	if err := parseFlags(fs, args, stderr, 0); err != nil {
		return err
	}
	tty := false
	if f, ok := stdin.(*os.File); ok {
		if t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			tty = true
			noEcho := *t
			noEcho.Lflag &^= unix.ECHO
			_ = unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, &noEcho)
			defer unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t)
		}
	}
	r := bufio.NewReader(stdin)
	read := func(prompt string) (string, error) {
		if tty {
			fmt.Fprint(stderr, prompt)
			defer fmt.Fprintln(stderr)
		}
		s, err := r.ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && s != "") {
			return "", errors.New("no password on standard input")
		}
		return strings.TrimRight(s, "\r\n"), nil
	}
	pw, err := read("Console password: ")
	if err != nil {
		return err
	}
	if tty {
		again, err := read("Repeat it: ")
		if err != nil {
			return err
		}
		if again != pw {
			return errors.New("the two passwords differ")
		}
	}
	if len(pw) < 8 || len(pw) > 128 {
		return errors.New("a console password has 8 to 128 characters")
	}
	h, err := argon2id.Hash(pw)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "init:\n  console:\n    passwordHash: %q\n", h)
	return nil
}
