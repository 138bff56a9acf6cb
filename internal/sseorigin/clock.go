package sseorigin

import (
	"context"
	"time"
)

// RunClock calls emit with 1, 2, 3, … once every interval until ctx ends,
// the first time one interval after it starts. It catches up after a late
// wake-up, or a slow emit, rather than drifting, so the long-run rate is
// exact. With an interval of 0 or less it emits nothing and waits for ctx.
func RunClock(ctx context.Context, interval time.Duration, emit func(seq uint64)) {
	if interval <= 0 {
		<-ctx.Done()
		return
	}
	timer := time.NewTimer(interval)
	defer timer.Stop()
	runClock(ctx, interval, emit, time.Now, func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		}
	})
}

// runClock is RunClock on a given clock: now tells the time, and wait(d)
// waits d (at once if d <= 0) and reports true, or reports false if ctx
// ended first. interval must be positive.
//
// Each event n is due at start + n*interval. After a wait, every event due
// by then goes out at once, so a late wake-up is caught up on, not carried
// forward. A wait returns no earlier than the next event is due, so every
// turn of the loop emits at least one event or ends with ctx.
func runClock(ctx context.Context, interval time.Duration, emit func(seq uint64),
	now func() time.Time, wait func(time.Duration) bool) {
	start := now()
	var seq uint64
	for ctx.Err() == nil && wait(start.Add(time.Duration(seq+1)*interval).Sub(now())) {
		elapsed := now().Sub(start)
		if elapsed < 0 {
			elapsed = 0 // only a clock that went backwards
		}
		due := uint64(elapsed / interval) // events due by now
		for seq < due && ctx.Err() == nil {
			seq++
			emit(seq)
		}
	}
}
