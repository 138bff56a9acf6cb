package sseorigin

import (
	"context"
	"errors"
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

// fakeClock is a clock for runClock that the test drives by hand: time
// moves only when runClock waits or emit sleeps, and the context ends when
// the time reaches end. Nothing in it depends on real time or on the
// scheduler.
type fakeClock struct {
	t      *testing.T
	now    time.Duration // since the start
	end    time.Duration // when the context ends
	cancel context.CancelFunc
	waits  int
}

// maxWaits bounds the waits of one run: far more than any case needs, so
// that a clock that waits without getting anywhere fails instead of
// spinning.
const maxWaits = 1000

var fakeEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (c *fakeClock) Now() time.Time { return fakeEpoch.Add(c.now) }

// advance moves the time on by d, or to the end if that comes first, and
// then ends the context. It reports whether the context is still live.
func (c *fakeClock) advance(d time.Duration) bool {
	d = max(d, 0)
	if c.now+d >= c.end {
		c.now = c.end
		c.cancel()
		return false
	}
	c.now += d
	return true
}

// wait is runClock's wait: like a timer, it fires at once for d <= 0.
func (c *fakeClock) wait(d time.Duration) bool {
	if c.waits++; c.waits > maxWaits {
		c.t.Fatalf("runClock waited %d times in %v without its context ending", c.waits, c.now)
	}
	return c.advance(d)
}

// runFake runs runClock on a fake clock for run, with emit taking slow
// for the events in slowSeqs, and returns what it emitted.
func runFake(t *testing.T, interval, run, slow time.Duration, slowSeqs ...uint64) []emission {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c := &fakeClock{t: t, end: run, cancel: cancel}
	var got []emission
	emit := func(seq uint64) {
		if len(got) >= maxWaits {
			t.Fatalf("runClock emitted more than %d events in %v", maxWaits, c.now)
		}
		got = append(got, emission{seq, c.now})
		if slices.Contains(slowSeqs, seq) {
			c.advance(slow) // the late wake-up
		}
	}
	runClock(ctx, interval, emit, c.Now, c.wait)
	if ctx.Err() == nil {
		t.Error("runClock returned before its context ended")
	}
	return got
}

func TestRunClockTiming(t *testing.T) {
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
		{"odd interval", 7 * ms, 30 * ms, 0, nil, []emission{{1, 7 * ms}, {2, 14 * ms}, {3, 21 * ms}, {4, 28 * ms}}},
		// Event 1 takes 250ms: events 2 and 3 are overdue when it returns
		// and go at once, and event 4 is back on the beat.
		{"catches up", 100 * ms, 450 * ms, 250 * ms, []uint64{1},
			[]emission{{1, 100 * ms}, {2, 350 * ms}, {3, 350 * ms}, {4, 400 * ms}}},
		// A slow emit that ends just past a beat: the next event goes at
		// once and the one after on the beat, with no drift.
		{"late by a little", 100 * ms, 420 * ms, 101 * ms, []uint64{2},
			[]emission{{1, 100 * ms}, {2, 200 * ms}, {3, 301 * ms}, {4, 400 * ms}}},
		// The context ends during a catch-up: what was still due is not
		// emitted.
		{"ends while behind", 100 * ms, 300 * ms, 500 * ms, []uint64{1},
			[]emission{{1, 100 * ms}}},
		{"ends before the first", 100 * ms, 99 * ms, 0, nil, nil},
		{"every nanosecond", 1, 5, 0, nil, []emission{{1, 1}, {2, 2}, {3, 3}, {4, 4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runFake(t, tc.interval, tc.run, tc.slow, tc.slowSeqs...)
			if !slices.Equal(got, tc.want) {
				t.Errorf("emitted %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRunClockReal runs RunClock itself, on the real clock, and checks
// only what does not depend on how fast the machine is: the sequence goes
// 1, 2, 3, … with no gap or repeat, nothing is emitted after the context
// ends, and RunClock returns then. The context's timeout only turns a hang
// into a failure.
func TestRunClockReal(t *testing.T) {
	const last = 5
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var got []uint64
	RunClock(ctx, time.Millisecond, func(seq uint64) {
		got = append(got, seq)
		if seq == last {
			cancel()
		}
	})
	if want := []uint64{1, 2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("emitted %v, want %v", got, want)
	}
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("RunClock returned with the context at %v, want it canceled after event %d", err, last)
	}
}

// TestRunClockOff checks that with an interval of 0 or less RunClock emits
// nothing and returns only once its context ends. It runs in a synctest
// bubble with no timer: synctest.Wait returns when RunClock is blocked for
// good, so nothing waits on a clock.
func TestRunClockOff(t *testing.T) {
	for _, interval := range []time.Duration{0, -time.Millisecond} {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			returned := false
			go func() {
				RunClock(ctx, interval, func(seq uint64) {
					t.Errorf("interval %v: emitted %d", interval, seq)
				})
				returned = true
			}()
			synctest.Wait()
			if returned {
				t.Errorf("interval %v: RunClock returned before its context ended", interval)
			}
			cancel()
			synctest.Wait()
			if !returned {
				t.Errorf("interval %v: RunClock did not return when its context ended", interval)
			}
		})
	}
}

// TestRunClockCanceled checks that RunClock with a context that has
// already ended returns at once and emits nothing.
func TestRunClockCanceled(t *testing.T) {
	for _, interval := range []time.Duration{0, time.Nanosecond, time.Hour} {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		RunClock(ctx, interval, func(seq uint64) {
			t.Errorf("interval %v: emitted %d", interval, seq)
		})
	}
}
