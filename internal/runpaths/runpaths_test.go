package runpaths

import "testing"

// The layout is a contract between hostd (which makes the files) and zeroclient (which
// dials the VNC socket), and with hosts upgraded in place: it must not move silently.
func TestLayout(t *testing.T) {
	for got, want := range map[string]string{
		Dir("/perm/hostd", "ws-abcdefgh12"):         "/perm/hostd/run/ws-abcdefgh12",
		VNCSocket("/perm/hostd", "ws-abcdefgh12"):   "/perm/hostd/run/ws-abcdefgh12/vnc.sock",
		AgentSocket("/perm/hostd", "ws-abcdefgh12"): "/perm/hostd/run/ws-abcdefgh12/agent.sock",
		SerialLog("/perm/hostd", "ws-abcdefgh12"):   "/perm/hostd/run/ws-abcdefgh12/serial.log",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}
