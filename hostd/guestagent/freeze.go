package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"deskhost/hostd/agent"

	"golang.org/x/sys/unix"
)

// freeze syncs and freezes the volumes' filesystems (FIFREEZE) so that hostd can cut a
// consistent snapshot of both disks; thaw undoes it. A freeze hostd never thaws (hostd
// died meanwhile) is undone by the guest itself after agent.MaxFreeze, so a WorkSpace is
// never left with its filesystems blocked.
func (g *guest) freeze() ([]string, error) {
	unix.Sync()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.frozen) > 0 {
		return g.frozen, nil
	}
	var dirs []string
	if g.rootMounted {
		dir := agent.RootMount
		if g.service {
			dir = "/"
		}
		dirs = append(dirs, g.fsPrefix+dir)
	}
	if g.homeMounted {
		dirs = append(dirs, g.fsPrefix+agent.HomeMount)
	}
	for _, d := range dirs {
		if err := fsIoctl(d, fiFreeze); err != nil {
			thawAll(g.frozen)
			g.frozen = nil
			return nil, fmt.Errorf("freeze %s: %w", d, err)
		}
		g.frozen = append(g.frozen, d)
	}
	frozen := g.frozen
	g.freezeGen++
	gen := g.freezeGen
	time.AfterFunc(agent.MaxFreeze, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.freezeGen == gen && len(g.frozen) > 0 {
			g.log.Printf("freeze: not thawed within %s; thawing", agent.MaxFreeze)
			thawAll(g.frozen)
			g.frozen = nil
		}
	})
	return frozen, nil
}

func (g *guest) thaw() ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	dirs := g.frozen
	g.frozen = nil
	return dirs, thawAll(dirs)
}

func thawAll(dirs []string) error {
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		// EINVAL: not frozen (thawed already).
		if err := fsIoctl(dirs[i], fiThaw); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("thaw %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

// linux/fs.h: FIFREEZE _IOWR('X', 119, int), FITHAW _IOWR('X', 120, int) (x/sys/unix
// does not define them).
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

func fsIoctl(dir string, req uint) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.IoctlSetInt(int(f.Fd()), req, 0)
}
