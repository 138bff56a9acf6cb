package sseorigin

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// emission is one call of a clock's emit: the sequence number, and how long
// after the start it came.
type emission struct {
	seq uint64
	at  time.Duration
}

// runClock runs RunClock in a synctest bubble for run, with emit taking
// slow for the events in slowSeqs, and returns what it emitted.
func runClock(t *testing.T, interval, run, slow time.Duration, slowSeqs ...uint64) []emission {
	var got []emission
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), run)
		defer cancel()
		RunClock(ctx, interval, func(seq uint64) {
			got = append(got, emission{seq, time.Since(start)})
			if slices.Contains(slowSeqs, seq) {
				time.Sleep(slow) // fake time: this is the late wake-up
			}
		})
		if ctx.Err() == nil {
			t.Error("RunClock returned before its context ended")
		}
	})
	return got
}

func TestRunClock(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name     string
		interval time.Duration
		run      time.Duration
		slow     time.Duration
		slowSeqs []uint64
		want     []emission
	}{
		{"steady", 100 * ms, 350 * ms, 0, nil, []emission{{1, 100 * ms}, {2, 200 * ms}, {3, 300 * ms}}},
		{"off", 0, time.Second, 0, nil, nil},
		{"negative", -ms, time.Second, 0, nil, nil},
		// Event 1 takes 250ms: events 2 and 3 are overdue when it returns
		// and go at once, and event 4 is back on the beat.
		{"catches up", 100 * ms, 450 * ms, 250 * ms, []uint64{1},
			[]emission{{1, 100 * ms}, {2, 350 * ms}, {3, 350 * ms}, {4, 400 * ms}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runClock(t, tc.interval, tc.run, tc.slow, tc.slowSeqs...)
			if !slices.Equal(got, tc.want) {
				t.Errorf("emitted %v, want %v", got, tc.want)
			}
		})
	}
}
