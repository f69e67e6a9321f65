package gateway

import (
	"bytes"
	"net"
	"testing"
)

// recordingConn records each write that reaches the connection.
type recordingConn struct {
	net.Conn
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func sizes(ws [][]byte) []int {
	var out []int
	for _, w := range ws {
		out = append(out, len(w))
	}
	return out
}

// TestCoalescer: outside hold, writes go straight through; inside, they are gathered and
// sent at the burst's limits (32 KiB, then twice as much each time) and at release, in
// order; a new burst starts small again.
func TestCoalescer(t *testing.T) {
	rc := &recordingConn{}
	c := newCoalescer(rc)
	c.Write([]byte("handshake"))
	if len(rc.writes) != 1 {
		t.Fatalf("writes outside hold were held: %v", sizes(rc.writes))
	}
	rc.writes = nil
	record := bytes.Repeat([]byte{'x'}, 16<<10)
	burst := func(records int) {
		c.hold()
		for i := 0; i < records; i++ {
			record[0] = byte(i)
			c.Write(record)
		}
		if err := c.release(); err != nil {
			t.Fatal(err)
		}
	}
	c.startBurst()
	burst(13) // 208 KiB: 32 + 64 + 112 (release)
	burst(13) // same burst: the limit is 256 KiB now, so one write at release
	want := []int{32 << 10, 64 << 10, 112 << 10, 208 << 10}
	if got := sizes(rc.writes); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Fatalf("write sizes %v, want %v", got, want)
	}
	all := bytes.Join(rc.writes, nil)
	for i := 0; i < 26; i++ {
		if all[i*16<<10] != byte(i%13) {
			t.Fatalf("record %d out of order", i)
		}
	}
	rc.writes = nil
	c.startBurst()
	burst(2)
	if got := sizes(rc.writes); len(got) != 1 || got[0] != 32<<10 {
		t.Errorf("new burst: %v", got)
	}
}
