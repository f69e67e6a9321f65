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

.PHONY: all deps build novnc image image-graphical appliance test demo demo-host demo-stop libvirt-start libvirt-stop clean fmt vet

all: build

# Debian packages every component lists in scripts/packages/*.txt.
deps:
	scripts/install-deps.sh

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/hostd ./hostd
	$(GO) build -trimpath -o $(BIN)/netcfg ./netcfg
	$(GO) build -trimpath -o $(BIN)/zeroclient ./zeroclient
	$(GO) build -trimpath -o $(BIN)/imagebuild ./imagebuild
	$(GO) build -trimpath -o $(BIN)/libvirtrun ./scripts/libvirtrun

# Refreshes the vendored noVNC (zeroclient/web/static/novnc) from the version and sha512
# pinned in zeroclient/web/novnc.lock; the result is committed and embedded.
novnc:
	$(GO) run ./zeroclient/web/internal/vendornovnc

# The tiny desktop image WorkSpaces boot (kernel + initramfs with the guest agent + root fs).
image: build
	$(BIN)/imagebuild desktop --out $(IMAGE) --cache $(CACHE)

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
