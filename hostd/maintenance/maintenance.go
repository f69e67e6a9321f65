// Package maintenance computes the guide's maintenance windows (guide catalog §6) in the
// site's time zone. It is pure logic: times in, windows out.
//
//   - AlwaysOn: "a four-hour period from 00h00 to 04h00, in the time zone of the
//     WorkSpace, each Sunday morning".
//   - AutoStop: "Beginning on the third Monday of the month, and for up to two weeks, the
//     maintenance window is open each day from about 00h00 to 05h00 … The WorkSpace can be
//     maintained on any one day in the maintenance window." Each WorkSpace gets one of the
//     14 days, chosen from its id, so a host's WorkSpaces spread over the fortnight.
//
// Hours are wall-clock hours: on a day the clocks change, a window is an hour shorter or
// longer, and a window starting at a midnight that does not exist starts when the day does.
package maintenance

import (
	"hash/fnv"
	"time"

	"deskhost/hostd/workspace"
)

// The guide's numbers.
const (
	AlwaysOnDay       = time.Sunday
	AlwaysOnHours     = 4
	AutoStopHours     = 5
	AutoStopSpanDays  = 14
	autoStopWeekday   = time.Monday
	autoStopNthMonday = 3
)

// Window is one maintenance window: [Start, End).
type Window struct {
	Start, End time.Time
}

// Contains reports whether t is within w.
func (w Window) Contains(t time.Time) bool { return !t.Before(w.Start) && t.Before(w.End) }

// IsZero reports whether w is no window.
func (w Window) IsZero() bool { return w.Start.IsZero() }

// dayWindow is the window opening at midnight of the local day y-m-d and lasting hours.
func dayWindow(y int, m time.Month, d, hours int, loc *time.Location) Window {
	start := time.Date(y, m, d, 0, 0, 0, 0, loc)
	// A midnight skipped by a clock change normalizes to the hour after; the day is still d.
	if start.Day() != d {
		start = time.Date(y, m, d, 1, 0, 0, 0, loc)
	}
	return Window{Start: start, End: time.Date(y, m, d, hours, 0, 0, 0, loc)}
}

// ThirdMonday is the day of month of the third Monday of y-m.
func ThirdMonday(y int, m time.Month) int {
	first := time.Date(y, m, 1, 12, 0, 0, 0, time.UTC).Weekday()
	return 1 + (int(autoStopWeekday)-int(first)+7)%7 + 7*(autoStopNthMonday-1)
}

// AutoStopDay is which of the fortnight's days (0..13) WorkSpace id is maintained on.
func AutoStopDay(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % AutoStopSpanDays)
}

// autoStopWindow is id's window in the fortnight that begins in y-m.
func autoStopWindow(id string, y int, m time.Month, loc *time.Location) Window {
	// time.Date normalizes a day past the month's end into the next month.
	d := time.Date(y, m, ThirdMonday(y, m)+AutoStopDay(id), 12, 0, 0, 0, loc)
	return dayWindow(d.Year(), d.Month(), d.Day(), AutoStopHours, loc)
}

// Next is the window of a WorkSpace in mode that is open at now or opens next, in the
// time zone loc.
func Next(mode workspace.RunningMode, id string, now time.Time, loc *time.Location) Window {
	local := now.In(loc)
	y, m, d := local.Date()
	if mode == workspace.AutoStop {
		// A fortnight starting late in a month runs into the next one.
		for i := -1; i <= 1; i++ {
			if w := autoStopWindow(id, y, m+time.Month(i), loc); now.Before(w.End) {
				return w
			}
		}
		return autoStopWindow(id, y, m+2, loc) // unreachable: next month's is always ahead
	}
	for i := 0; i <= 7; i++ {
		day := time.Date(y, m, d+i, 12, 0, 0, 0, loc)
		if day.Weekday() != AlwaysOnDay {
			continue
		}
		if w := dayWindow(day.Year(), day.Month(), day.Day(), AlwaysOnHours, loc); now.Before(w.End) {
			return w
		}
	}
	return Window{} // unreachable: a Sunday is always within 8 days
}

// Current is the window open at now, if any.
func Current(mode workspace.RunningMode, id string, now time.Time, loc *time.Location) (Window, bool) {
	w := Next(mode, id, now, loc)
	return w, w.Contains(now)
}
