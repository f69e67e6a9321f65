// Package guestservice is the guest agent as a systemd service: the units and scripts that
// run it in a systemd image (deskhost-agent.service, the agent with -service, and
// deskhost-user.service, the user volume on /home and the WorkSpace's user). imagebuild
// installs them in the graphical image and the guest agent installs them in an imported
// image (adopt), so both get the same text.
package guestservice

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// AgentPath is where the agent binary goes in the image (deskhost-agent.service runs it).
const AgentPath = "/usr/lib/deskhost/guestagent"

// Units are the services Install enables (in multi-user.target), in start order.
var Units = []string{"deskhost-user.service", "deskhost-agent.service"}

//go:embed files
var files embed.FS

// File is one file Install writes: Path is absolute in the image.
type File struct {
	Path string
	Mode os.FileMode
	Data []byte
}

// Files lists the units and scripts (scripts under /usr/lib/deskhost are executable).
func Files() ([]File, error) {
	var out []File
	err := fs.WalkDir(files, "files", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, "files")
		mode := os.FileMode(0o644)
		if strings.HasPrefix(rel, "/usr/lib/deskhost/") {
			mode = 0o755
		}
		out = append(out, File{Path: rel, Mode: mode, Data: b})
		return nil
	})
	return out, err
}

// Install writes the files and the agent binary into the system tree at root and enables
// the units the way `systemctl enable` does (symlinks in multi-user.target.wants), so it
// works on a tree with no running systemd.
func Install(root string, agentBin []byte) error {
	fl, err := Files()
	if err != nil {
		return err
	}
	fl = append(fl, File{Path: AgentPath, Mode: 0o755, Data: agentBin})
	for _, f := range fl {
		dst := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("guestservice: %w", err)
		}
		// Through a new file: the agent may be replacing its own running binary.
		tmp := dst + ".deskhost-new"
		if err := os.WriteFile(tmp, f.Data, f.Mode); err != nil {
			return fmt.Errorf("guestservice: %w", err)
		}
		if err := os.Chmod(tmp, f.Mode); err != nil { // whatever the umask
			return fmt.Errorf("guestservice: %w", err)
		}
		if err := os.Rename(tmp, dst); err != nil {
			return fmt.Errorf("guestservice: %w", err)
		}
	}
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return fmt.Errorf("guestservice: %w", err)
	}
	for _, u := range Units {
		l := filepath.Join(wants, u)
		_ = os.Remove(l)
		if err := os.Symlink("/etc/systemd/system/"+u, l); err != nil {
			return fmt.Errorf("guestservice: enable %s: %w", u, err)
		}
	}
	return nil
}
