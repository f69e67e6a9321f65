// Command imagebuild builds deskhost images.
//
//	imagebuild desktop --out build/images/desktop [--cache build/cache] [--profile tiny|graphical]
//	imagebuild build --profile configs/appliance.yaml --out build/images/appliance
//	imagebuild serve [--http :8080] [--tftp :69] [--proxydhcp-qemu DIR] build/images/appliance/pxe
//	imagebuild flash --image build/images/appliance/disk.img --device /dev/sdX
//	imagebuild console-password < password     the console password's hash for a host config
//
// Each subcommand has its own flags (imagebuild SUBCOMMAND -h).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"deskhost/imagebuild/desktop"
	"deskhost/imagebuild/initramfs"
)

// command is one subcommand. To add one, add an entry to commands.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"desktop":          {"build the WorkSpace desktop image (kernel, initramfs with the guest agent, root qcow2, image.json)", runDesktop},
	"build":            {"build the appliance image from a profile (PXE bundle, raw EFI disk, manifest)", runBuild},
	"serve":            {"serve a PXE bundle over HTTP and TFTP for iPXE", runServe},
	"flash":            {"write a disk image to a block device, read it back and verify its sha256", runFlash},
	"console-password": {"print the argon2id hash of a console password (init.console.passwordHash)", runConsolePassword},
}

// errUsage is returned for bad command lines (exit status 2); flag has printed why.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "imagebuild: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	if err := cmd.run(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, errUsage) {
			return 2
		}
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "imagebuild %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: imagebuild COMMAND [flags]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-16s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nimagebuild COMMAND -h shows the command's flags.")
}

func runDesktop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("imagebuild desktop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "build/images/desktop", "output directory (replaced when the build completes)")
	cache := fs.String("cache", "build/cache", "cache directory for downloads and unpacked kernels")
	kpkg := fs.String("kernel-package", "", "Debian kernel package or metapackage (default linux-image-amd64)")
	kver := fs.String("kernel-version", "", "pin the version of --kernel-package (default: apt's candidate)")
	kdeb := fs.String("kernel-deb", "", "use this local linux-image-*.deb instead of apt (offline builds)")
	aptUpdate := fs.Bool("apt-update", false, "run apt-get update before resolving the kernel package (make image does)")
	boot := fs.String("boot", desktop.BootPVH, "kernel boot protocol: pvh (uncompressed vmlinux, faster under TCG) or bzimage")
	comp := fs.String("initrd-compression", string(initramfs.None), "initramfs compression: none or gzip")
	cmdline := fs.String("cmdline", desktop.DefaultCmdline, "base kernel command line recorded in image.json")
	agentBin := fs.String("agent", "", "prebuilt static guest agent binary (default: build hostd/guestagent)")
	profile := fs.String("profile", desktop.ProfileTiny, "tiny (the agent as init, a status screen: fast tests) or graphical (Debian 12 + Xfce by mmdebstrap, automatic login)")
	mirror := fs.String("mirror", "", "Debian mirror for --profile graphical (default: mmdebstrap's, deb.debian.org)")
	quiet := fs.Bool("q", false, "do not print progress")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: imagebuild desktop [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "imagebuild desktop: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		fs.Usage()
		return errUsage
	}
	log := func(format string, a ...any) { fmt.Fprintf(stderr, "imagebuild desktop: "+format+"\n", a...) }
	if *quiet {
		log = func(string, ...any) {}
	}
	start := time.Now()
	m, err := desktop.Build(ctx, desktop.Options{
		Out: *out, CacheDir: *cache,
		KernelPackage: *kpkg, KernelVersion: *kver, KernelDeb: *kdeb, UpdateAptLists: *aptUpdate,
		Boot: *boot, Compression: initramfs.Compression(*comp), Cmdline: *cmdline,
		AgentBinary: *agentBin, Profile: *profile, Mirror: *mirror, Log: log,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s kernel %s (%s), %s, %s in %.1fs\n", *out, m.Name, m.KernelVersion, m.BootProtocol, m.Initrd, m.Root, time.Since(start).Seconds())
	return nil
}
