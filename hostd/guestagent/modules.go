package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"deskhost/internal/insmod"
)

// loadEntry is one line of /lib/modules/load.order, written by imagebuild: the absolute
// path of a .ko, in dependency order. A leading '?' marks an optional module (a soft
// dependency, e.g. a CPU-specific crc32c that refuses to load without its CPU feature):
// failing to load it is not an error.
type loadEntry struct {
	path     string
	optional bool
}

func parseLoadOrder(r io.Reader) ([]loadEntry, error) {
	var out []loadEntry
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		e := loadEntry{}
		if rest, ok := strings.CutPrefix(l, "?"); ok {
			e.optional, l = true, strings.TrimSpace(rest)
		}
		if !strings.HasPrefix(l, "/") || !strings.HasSuffix(l, ".ko") {
			return nil, fmt.Errorf("line %d: %q is not an absolute path to a .ko", n, l)
		}
		e.path = l
		out = append(out, e)
	}
	return out, sc.Err()
}

// loadModules loads every module of the load order with finit_module(2). A module that
// is already loaded (EEXIST) counts as loaded.
func loadModules(orderPath string, log *logger) (int, []error) {
	f, err := os.Open(orderPath)
	if err != nil {
		return 0, []error{fmt.Errorf("module load order: %w", err)}
	}
	entries, err := parseLoadOrder(f)
	f.Close()
	if err != nil {
		return 0, []error{fmt.Errorf("module load order %s: %w", orderPath, err)}
	}
	var errs []error
	n := 0
	for _, e := range entries {
		if err := insmod.Insert(e.path); err != nil {
			if e.optional {
				log.Printf("optional module %s not loaded: %v", e.path, err)
				continue
			}
			errs = append(errs, fmt.Errorf("loading module %s: %w", e.path, err))
			continue
		}
		n++
	}
	return n, errs
}
