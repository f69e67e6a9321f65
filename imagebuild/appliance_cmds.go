package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"deskhost/imagebuild/appliance"
	"deskhost/imagebuild/flash"
	"deskhost/imagebuild/profile"
	"deskhost/imagebuild/serve"
	"deskhost/internal/logging"
)

// parseFlags parses a subcommand's flags: usage errors become errUsage (flag printed
// why), -h becomes flag.ErrHelp, and stray arguments are refused unless wantArgs.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer, wantArgs int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() != wantArgs {
		if wantArgs == 0 {
			fmt.Fprintf(stderr, "%s: unexpected arguments: %s\n", fs.Name(), strings.Join(fs.Args(), " "))
		} else {
			fmt.Fprintf(stderr, "%s: want %d argument(s), got %d\n", fs.Name(), wantArgs, fs.NArg())
		}
		fs.Usage()
		return errUsage
	}
	return nil
}

func runBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("imagebuild build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	prof := fs.String("profile", "configs/appliance.yaml", "the image profile (strict YAML)")
	out := fs.String("out", "build/images/appliance", "output directory (replaced only when the build completes)")
	cache := fs.String("cache", "build/cache", "cache directory for kernel downloads")
	quiet := fs.Bool("q", false, "do not print progress")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: imagebuild build [--profile FILE] [--out DIR] [--cache DIR]")
		fmt.Fprintln(stderr, "\noutput formats (the profile's outputs[].format):")
		for _, n := range profile.FormatNames() {
			fmt.Fprintf(stderr, "  %-8s %s\n", n, profile.Formats[n].Summary)
		}
		fmt.Fprintln(stderr, "  manifest.json is always written: versions and sha256 of every input and artifact")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stderr, 0); err != nil {
		return err
	}
	p, err := profile.Load(*prof)
	if err != nil {
		return err
	}
	log := func(format string, a ...any) { fmt.Fprintf(stderr, "imagebuild build: "+format+"\n", a...) }
	if *quiet {
		log = nil
	}
	start := time.Now()
	m, err := appliance.Build(ctx, appliance.Options{Profile: p, Out: *out, CacheDir: *cache, Log: log})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s %s, kernel %s, initramfs %.1f MiB (%s; %.1f MiB uncompressed), outputs %s, in %.1fs\n",
		*out, m.Name, m.Version, m.Kernel.Release, float64(m.Initramfs.CompressedBytes)/(1<<20), m.Initramfs.Compression,
		float64(m.Initramfs.UncompressedBytes)/(1<<20), strings.Join(m.Outputs, ", "), time.Since(start).Seconds())
	for _, w := range m.Warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	return nil
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("imagebuild serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http", ":8080", "HTTP listen address (\"\" disables HTTP)")
	tftpAddr := fs.String("tftp", ":69", "TFTP listen address (\"\" disables TFTP)")
	qemuDir := fs.String("proxydhcp-qemu", "", "answer iPXE as a ProxyDHCP server on a qemu guest's user network, through files in `DIR` (prints the qemu options)")
	netdev := fs.String("netdev", "mgmt", "with --proxydhcp-qemu: the id of the guest's -netdev user,...")
	bootURL := fs.String("boot-url", "", "with --proxydhcp-qemu: the boot file offered (default http://10.0.2.2:PORT/boot.ipxe, this server as a qemu guest sees it)")
	logFlags := logging.Register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: imagebuild serve [--http ADDR] [--tftp ADDR] [--proxydhcp-qemu DIR [--netdev ID] [--boot-url URL]] DIR")
		fmt.Fprintln(stderr, "\nServes DIR (a PXE bundle: build/images/appliance/pxe) to iPXE: chain")
		fmt.Fprintln(stderr, "http://SERVER:PORT/boot.ipxe or tftp://SERVER/boot.ipxe. Names outside DIR are refused.")
		fmt.Fprintln(stderr, "With --proxydhcp-qemu it also answers the guest's iPXE as a ProxyDHCP server, so iPXE")
		fmt.Fprintln(stderr, "does not wait ~3 s for one after qemu's DHCP offer.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stderr, 1); err != nil {
		return err
	}
	log, err := logFlags.Logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "imagebuild serve: %v\n", err)
		return errUsage
	}
	s, err := serve.New(fs.Arg(0), log)
	if err != nil {
		return err
	}
	defer s.Close()
	l, err := serve.Listen(*httpAddr, *tftpAddr)
	if err != nil {
		return err
	}
	var qn *serve.QEMUNet
	if *qemuDir != "" {
		bootFile := *bootURL
		if bootFile == "" {
			if l.HTTP == nil {
				l.Close()
				return errors.New("imagebuild serve: --proxydhcp-qemu without HTTP needs --boot-url")
			}
			bootFile = fmt.Sprintf("http://10.0.2.2:%d/boot.ipxe", l.HTTP.Addr().(*net.TCPAddr).Port)
		}
		host, err := bootURLHost(bootFile)
		if err != nil {
			l.Close()
			return err
		}
		p, err := serve.NewProxyDHCP(bootFile, host, nil)
		if err != nil {
			l.Close()
			return err
		}
		p.Log = log.Info
		if qn, err = serve.ListenQEMU(*qemuDir, p); err != nil {
			l.Close()
			return err
		}
		defer qn.Close()
		fmt.Fprintf(stdout, "ProxyDHCP for a qemu guest: boot file %s; qemu options: %s\n", bootFile, strings.Join(qn.Args(*netdev), " "))
	}
	if l.HTTP != nil {
		fmt.Fprintf(stdout, "serving %s over HTTP on %s: chain http://%s/boot.ipxe\n", fs.Arg(0), l.HTTP.Addr(), l.HTTP.Addr())
	}
	if l.TFTP != nil {
		fmt.Fprintf(stdout, "serving %s over TFTP on %s\n", fs.Arg(0), l.TFTP.LocalAddr())
	}
	if qn != nil {
		go qn.Run(ctx)
	}
	return s.Run(ctx, l)
}

// bootURLHost is the IPv4 address in a boot URL: ProxyDHCP's server identifier.
func bootURLHost(u string) (net.IP, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("imagebuild serve: --boot-url: %w", err)
	}
	ip := net.ParseIP(pu.Hostname()).To4()
	if (pu.Scheme != "http" && pu.Scheme != "tftp") || ip == nil {
		return nil, fmt.Errorf("imagebuild serve: --boot-url %q: want http:// or tftp:// with an IPv4 address", u)
	}
	return ip, nil
}

func runFlash(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("imagebuild flash", flag.ContinueOnError)
	fs.SetOutput(stderr)
	image := fs.String("image", "", "the raw disk image (disk.img of a raw-efi build)")
	device := fs.String("device", "", "the block device to overwrite, e.g. /dev/sdb")
	quiet := fs.Bool("q", false, "do not print progress")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: imagebuild flash --image FILE --device DEV")
		fmt.Fprintln(stderr, "\nOverwrites DEV with FILE, reads it back and checks the sha256. Refuses a mounted")
		fmt.Fprintln(stderr, "or busy device and one smaller than the image.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stderr, 0); err != nil {
		return err
	}
	if *image == "" || *device == "" {
		fmt.Fprintln(stderr, "imagebuild flash: --image and --device are required")
		fs.Usage()
		return errUsage
	}
	progress := func(phase string, done, total int64, el time.Duration) {
		rate := float64(done) / (1 << 20) / el.Seconds()
		fmt.Fprintf(stderr, "imagebuild flash: %-6s %5.1f%%  %d/%d MiB  %.0f MiB/s\n", phase, 100*float64(done)/float64(total), done>>20, total>>20, rate)
	}
	if *quiet {
		progress = nil
	}
	r, err := flash.Flash(ctx, *image, *device, progress)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: wrote %d bytes in %.1fs, verified sha256 %s in %.1fs\n", *device, r.Bytes, r.Write.Seconds(), r.SHA256, r.Verify.Seconds())
	return nil
}
