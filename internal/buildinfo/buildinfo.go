// Package buildinfo says which build of a deskhost binary is running: the module version
// and the VCS revision the Go toolchain stamped into it (debug.ReadBuildInfo), so an
// operator can tell two hosts' builds apart with `PROGRAM version`.
package buildinfo

import (
	"fmt"
	"io"
	"runtime/debug"
)

// Set by the Makefile's -ldflags -X when the toolchain could not stamp VCS information
// itself: a git worktree (its .git is a file, which go does not recognise) or a machine
// whose GOFLAGS has -buildvcs=false. debug.ReadBuildInfo's values win when present.
var (
	stampedRevision string
	stampedTime     string
	stampedModified string // "true" or "false"
)

// Info is what a binary knows about its own build.
type Info struct {
	Program   string `json:"program"`
	Module    string `json:"module"`
	Version   string `json:"version"`  // module version; "(devel)" for a build from a checkout
	Revision  string `json:"revision"` // vcs.revision, "" when the build had no VCS information
	Time      string `json:"time,omitempty"`
	Modified  bool   `json:"modified"` // the work tree had uncommitted changes
	GoVersion string `json:"goVersion"`
}

// Read returns the running binary's build information.
func Read(program string) (info Info) {
	info = Info{Program: program, Version: "unknown"}
	defer func() {
		if info.Revision == "" && stampedRevision != "" {
			info.Revision, info.Time, info.Modified = stampedRevision, stampedTime, stampedModified == "true"
		}
	}()
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	info.Module, info.Version, info.GoVersion = bi.Main.Path, bi.Main.Version, bi.GoVersion
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is the one line `version` prints:
// "hostd deskhost (devel) revision 0123abcd… 2026-12-05T13:00:00Z modified go1.26.8".
func (i Info) String() string {
	rev := "revision unknown (built without VCS information)"
	if i.Revision != "" {
		rev = "revision " + i.Revision
		if i.Time != "" {
			rev += " " + i.Time
		}
		if i.Modified {
			rev += " modified"
		}
	}
	return fmt.Sprintf("%s %s %s %s %s", i.Program, i.Module, i.Version, rev, i.GoVersion)
}

// Print writes program's version line to w; each binary's `version` command calls it.
func Print(w io.Writer, program string) {
	fmt.Fprintln(w, Read(program).String())
}
