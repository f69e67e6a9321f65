package maintenance

import (
	"fmt"
	"testing"
	"time"

	"deskhost/hostd/workspace"
)

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// idOnDay finds a WorkSpace id maintained on day k of the fortnight.
func idOnDay(t *testing.T, k int) string {
	t.Helper()
	for i := 0; i < 10000; i++ {
		id := fmt.Sprintf("ws-%010d", i)
		if AutoStopDay(id) == k {
			return id
		}
	}
	t.Fatalf("no id on day %d", k)
	return ""
}

func TestThirdMonday(t *testing.T) {
	for _, c := range []struct {
		y    int
		m    time.Month
		want int
	}{
		{2026, time.June, 15},     // the 1st is a Monday
		{2026, time.December, 21}, // the 1st is a Tuesday: the latest possible
		{2026, time.January, 19},
		{2026, time.February, 16},
		{2027, time.March, 15},
	} {
		got := ThirdMonday(c.y, c.m)
		if got != c.want {
			t.Errorf("ThirdMonday(%d-%02d) = %d, want %d", c.y, c.m, got, c.want)
		}
		if wd := time.Date(c.y, c.m, got, 0, 0, 0, 0, time.UTC).Weekday(); wd != time.Monday {
			t.Errorf("%d-%02d-%02d is a %s", c.y, c.m, got, wd)
		}
	}
}

func TestAlwaysOnWindow(t *testing.T) {
	for _, name := range []string{"UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata", "Pacific/Auckland", "America/Santiago"} {
		loc := zone(t, name)
		// Sunday 2026-12-06 in every zone.
		at := func(d, h, min int) time.Time { return time.Date(2026, 12, d, h, min, 0, 0, loc) }
		for _, c := range []struct {
			t    time.Time
			want bool
		}{
			{at(5, 23, 59), false}, // Saturday night
			{at(6, 0, 0), true},
			{at(6, 2, 30), true},
			{at(6, 3, 59), true},
			{at(6, 4, 0), false},
			{at(7, 1, 0), false}, // Monday
			{at(13, 1, 0), true}, // the next Sunday
		} {
			w, in := Current(workspace.AlwaysOn, "ws-any", c.t, loc)
			if in != c.want {
				t.Errorf("%s %s: in window %v, want %v (window %v–%v)", name, c.t.Format(time.RFC3339), in, c.want, w.Start, w.End)
			}
		}
		// Next from a Monday is the coming Sunday, four hours long in December.
		w := Next(workspace.AlwaysOn, "ws-any", at(7, 12, 0), loc)
		if !w.Start.Equal(at(13, 0, 0)) || w.End.Sub(w.Start) != 4*time.Hour {
			t.Errorf("%s: next window %v–%v, want Sunday the 13th 00:00–04:00", name, w.Start, w.End)
		}
	}
}

// On the days clocks change, the window is the wall-clock 00:00–04:00.
func TestAlwaysOnDST(t *testing.T) {
	for _, c := range []struct {
		zone string
		day  time.Time // the Sunday, as a UTC date
		hrs  time.Duration
	}{
		{"Europe/Berlin", time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC), 3 * time.Hour},       // 02:00 → 03:00
		{"Europe/Berlin", time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC), 5 * time.Hour},      // 03:00 → 02:00
		{"America/Los_Angeles", time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC), 3 * time.Hour},  // 02:00 → 03:00
		{"America/Los_Angeles", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), 5 * time.Hour}, // 02:00 → 01:00
		{"America/Santiago", time.Date(2026, 9, 6, 0, 0, 0, 0, time.UTC), 3 * time.Hour},     // midnight skipped: 00:00 → 01:00
		{"America/Santiago", time.Date(2026, 4, 5, 0, 0, 0, 0, time.UTC), 4 * time.Hour},     // 24:00 Saturday goes back to 23:00: Sunday 00:00 happens once
	} {
		loc := zone(t, c.zone)
		y, m, d := c.day.Date()
		noon := time.Date(y, m, d-1, 12, 0, 0, 0, loc) // Saturday noon
		w := Next(workspace.AlwaysOn, "ws-any", noon, loc)
		if got := w.End.Sub(w.Start); got != c.hrs {
			t.Errorf("%s %s: window %v–%v lasts %s, want %s", c.zone, c.day.Format("2006-01-02"), w.Start, w.End, got, c.hrs)
		}
		if s := w.Start.In(loc); s.Weekday() != time.Sunday || s.Day() != d {
			t.Errorf("%s %s: window starts %v, not on that Sunday", c.zone, c.day.Format("2006-01-02"), s)
		}
		if _, in := Current(workspace.AlwaysOn, "ws-any", w.Start.Add(-time.Second), loc); in {
			t.Errorf("%s: in the window a second before it opens (%v)", c.zone, w.Start)
		}
		if _, in := Current(workspace.AlwaysOn, "ws-any", w.End.Add(-time.Second), loc); !in {
			t.Errorf("%s: not in the window a second before it closes (%v)", c.zone, w.End)
		}
	}
}

func TestAutoStopWindow(t *testing.T) {
	for _, name := range []string{"UTC", "Europe/Berlin", "Asia/Kolkata", "America/Los_Angeles"} {
		loc := zone(t, name)
		for _, k := range []int{0, 6, 13} {
			id := idOnDay(t, k)
			// June 2026: third Monday the 15th.
			day := 15 + k
			at := func(d, h, min int) time.Time { return time.Date(2026, 6, d, h, min, 0, 0, loc) }
			for _, c := range []struct {
				t    time.Time
				want bool
			}{
				{at(day-1, 23, 59), false},
				{at(day, 0, 0), true},
				{at(day, 4, 59), true},
				{at(day, 5, 0), false},
				{at(day+1, 1, 0), false},
				{at(1, 1, 0), false},
			} {
				if w, in := Current(workspace.AutoStop, id, c.t, loc); in != c.want {
					t.Errorf("%s day %d %s: in window %v, want %v (window %v–%v)", name, k, c.t.Format(time.RFC3339), in, c.want, w.Start, w.End)
				}
			}
			// Once a month: from the 2nd, the next window is this month's.
			if w := Next(workspace.AutoStop, id, at(2, 0, 0), loc); !w.Start.Equal(at(day, 0, 0)) {
				t.Errorf("%s day %d: next window %v, want %v", name, k, w.Start, at(day, 0, 0))
			}
			// After it, next month's: July 2026's third Monday is the 20th.
			want := time.Date(2026, 7, 20+k, 0, 0, 0, 0, loc)
			if w := Next(workspace.AutoStop, id, at(day, 5, 0), loc); !w.Start.Equal(want) {
				t.Errorf("%s day %d: window after June's %v, want %v", name, k, w.Start, want)
			}
		}
	}
}

// December 2026's fortnight (third Monday the 21st) runs into January 2027.
func TestAutoStopAcrossTheMonth(t *testing.T) {
	loc := zone(t, "Europe/Berlin")
	id := idOnDay(t, 13)
	want := time.Date(2027, 1, 3, 0, 0, 0, 0, loc)
	for _, now := range []time.Time{
		time.Date(2026, 12, 25, 12, 0, 0, 0, loc),
		time.Date(2027, 1, 1, 0, 0, 0, 0, loc), // January's own fortnight is later
		time.Date(2027, 1, 3, 4, 0, 0, 0, loc),
	} {
		w := Next(workspace.AutoStop, id, now, loc)
		if !w.Start.Equal(want) || w.End.Sub(w.Start) != 5*time.Hour {
			t.Errorf("from %v: window %v–%v, want %v for 5h", now, w.Start, w.End, want)
		}
	}
	// After it: January 2027's third Monday, the 18th, + 13 days = the 31st.
	if w := Next(workspace.AutoStop, id, time.Date(2027, 1, 3, 5, 0, 0, 0, loc), loc); !w.Start.Equal(time.Date(2027, 1, 31, 0, 0, 0, 0, loc)) {
		t.Errorf("after the 3rd: %v", w.Start)
	}
}

func TestAutoStopDaysSpread(t *testing.T) {
	seen := map[int]int{}
	for i := 0; i < 1400; i++ {
		seen[AutoStopDay(fmt.Sprintf("ws-%010d", i))]++
	}
	for k := 0; k < AutoStopSpanDays; k++ {
		if seen[k] < 50 {
			t.Errorf("day %d: %d of 1400 WorkSpaces", k, seen[k])
		}
	}
}
