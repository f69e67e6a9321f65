# deskhost — see README.md. Everything here runs as root on Debian 12.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

GO      ?= go
BIN     := bin
RUNDIR  ?= /run/deskhost
IMAGE   := build/images/desktop
GRAPHICAL := build/images/desktop-graphical
APPLIANCE := build/images/appliance
CACHE   := build/cache
BINARIES := hostd netcfg zeroclient imagebuild libvirtrun
# `PROGRAM version` reports the VCS revision: go stamps it itself (-buildvcs=auto, over a
# machine-wide GOFLAGS=-buildvcs=false) except in a git worktree, so stamp it here too.
REVISION := $(shell git rev-parse HEAD 2>/dev/null)
REVTIME  := $(shell git log -1 --format=%cI 2>/dev/null)
MODIFIED := $(shell git status --porcelain 2>/dev/null | grep -q . && echo true || echo false)
BUILDINFO := deskhost/internal/buildinfo
GOBUILD := $(GO) build -trimpath -buildvcs=auto -ldflags "-X $(BUILDINFO).stampedRevision=$(REVISION) -X $(BUILDINFO).stampedTime=$(REVTIME) -X $(BUILDINFO).stampedModified=$(MODIFIED)"

.PHONY: all deps build novnc image image-graphical appliance test demo demo-host demo-stop libvirt-start libvirt-stop clean fmt vet

all: build

# Debian packages every component lists in scripts/packages/*.txt.
deps:
	scripts/install-deps.sh

build:
	@mkdir -p $(BIN)
	$(GOBUILD) -o $(BIN)/hostd ./hostd
	$(GOBUILD) -o $(BIN)/netcfg ./netcfg
	$(GOBUILD) -o $(BIN)/zeroclient ./zeroclient
	$(GOBUILD) -o $(BIN)/imagebuild ./imagebuild
	$(GOBUILD) -o $(BIN)/libvirtrun ./scripts/libvirtrun

# Refreshes the vendored noVNC (zeroclient/web/static/novnc) from the version and sha512
# pinned in zeroclient/web/novnc.lock; the result is committed and embedded.
novnc:
	$(GO) run ./zeroclient/web/internal/vendornovnc

# The tiny desktop image WorkSpaces boot (kernel + initramfs with the guest agent + root fs).
# --apt-update: the kernel is resolved from freshly updated apt lists, never stale ones.
image: build
	$(BIN)/imagebuild desktop --apt-update --out $(IMAGE) --cache $(CACHE)

# The graphical desktop image (Debian 12 + Xfce by mmdebstrap, automatic login, the agent
# as a service); its Debian system and .debs are cached under $(CACHE)/graphical.
image-graphical: build
	$(BIN)/imagebuild desktop --profile graphical --out $(GRAPHICAL) --cache $(CACHE)

# The appliance image (configs/appliance.yaml): PXE bundle, raw EFI disk, manifest.
appliance: build
	$(BIN)/imagebuild build --profile configs/appliance.yaml --out $(APPLIANCE) --cache $(CACHE)

libvirt-start: build
	$(BIN)/libvirtrun start --root $(RUNDIR)/libvirt

libvirt-stop: build
	$(BIN)/libvirtrun stop --root $(RUNDIR)/libvirt

# Installs what the tests need, starts libvirtd for them, runs every test.
test: deps build image
	RUNDIR=$(RUNDIR) IMAGE=$(IMAGE) scripts/test.sh

# Builds the appliance image and boots it in QEMU as a virtual host over PXE (imagebuild
# serve + iPXE), its serial console on this terminal, to "deskhost: ready".
demo: deps appliance
	APPLIANCE=$(APPLIANCE) scripts/appliance-demo.sh

# hostd on this machine: starts libvirtd and hostd, creates a demo WorkSpace and waits
# until it is AVAILABLE (make demo-stop ends it).
demo-host: deps build image
	RUNDIR=$(RUNDIR) IMAGE=$(IMAGE) scripts/demo.sh start

demo-stop: build
	RUNDIR=$(RUNDIR) scripts/demo.sh stop

fmt:
	gofmt -l -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf $(BIN) build/images build/demo build/appliance-demo
