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
	start := time.Now()
	var seq uint64
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		due := uint64(time.Since(start) / interval) // events due by now
		for seq < due && ctx.Err() == nil {
			seq++
			emit(seq)
		}
		timer.Reset(time.Until(start.Add(time.Duration(seq+1) * interval)))
	}
}
