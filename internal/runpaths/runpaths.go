// Package runpaths names a WorkSpace's runtime files, which hostd makes and zeroclient
// uses: its display's VNC socket, its guest agent's socket and its serial console log, all
// in <hostd.dataDir>/run/<WorkSpace id>/. hostd's controller creates that directory and
// points the domain at these paths; zeroclient's gateway dials the VNC socket.
package runpaths

import "path/filepath"

// Dir holds a WorkSpace's runtime files; hostd removes it with the WorkSpace.
func Dir(dataDir, id string) string { return filepath.Join(dataDir, "run", id) }

// VNCSocket is where the WorkSpace's display is served (qemu's VNC server on a unix
// socket only).
func VNCSocket(dataDir, id string) string { return filepath.Join(Dir(dataDir, id), "vnc.sock") }

// AgentSocket is the WorkSpace's guest agent channel.
func AgentSocket(dataDir, id string) string { return filepath.Join(Dir(dataDir, id), "agent.sock") }

// SerialLog is the WorkSpace's serial console log.
func SerialLog(dataDir, id string) string { return filepath.Join(Dir(dataDir, id), "serial.log") }
