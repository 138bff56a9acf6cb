package main

// This file is the endurance run's clock and judgement, apart from the
// processes they drive, so that they can be tested on a fake clock: which
// action is due when, and whether a run passed.

import (
	"context"
	"fmt"
	"math"
	"time"
)

// task is an action repeated every so long from the start of the run:
// at every, 2×every, … but not at or after the end.
type task struct {
	name  string
	every time.Duration
}

// clock is the time as the schedule sees it.
type clock interface {
	Now() time.Time
	// Sleep waits d, and reports false if ctx ended first.
	Sleep(ctx context.Context, d time.Duration) bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// nextDue is when task t is next due after at, or false if not before end.
func (t task) nextDue(at, end time.Duration) (time.Duration, bool) {
	if t.every <= 0 {
		return 0, false
	}
	next := (at/t.every + 1) * t.every
	return next, next < end
}

// runSchedule calls do(name, at) for every task at each of its times
// until end, on clk, then returns; or returns early when ctx ends. A
// task's time is when it is due, measured from the start; tasks due at
// the same time run in the order given. A late wake-up runs what fell due
// meanwhile, each once, and goes on: an action never piles up.
func runSchedule(ctx context.Context, clk clock, tasks []task, end time.Duration, do func(name string, at time.Duration)) {
	start := clk.Now()
	next := make([]time.Duration, len(tasks))
	live := make([]bool, len(tasks))
	for i, t := range tasks {
		next[i], live[i] = t.nextDue(0, end)
	}
	for {
		soonest := end
		for i := range tasks {
			if live[i] && next[i] < soonest {
				soonest = next[i]
			}
		}
		if wait := soonest - clk.Now().Sub(start); wait > 0 && !clk.Sleep(ctx, wait) {
			return
		}
		if ctx.Err() != nil {
			return
		}
		if soonest >= end {
			return
		}
		now := clk.Now().Sub(start)
		for i, t := range tasks {
			if live[i] && next[i] <= now {
				do(t.name, next[i])
				next[i], live[i] = t.nextDue(max(now, next[i]), end)
			}
		}
	}
}

// sample is one reading of the proxy, and of the events delivered so far.
type sample struct {
	At         time.Duration // since the start
	RSSKiB     int64
	HeapBytes  float64 // go_memstats_heap_inuse_bytes
	Goroutines float64 // go_goroutines
	FDs        int
	Events     uint64 // delivered to the main cohort so far
}

// metric is one of the quantities that must end where they were at the mark.
type metric struct {
	name string
	get  func(sample) float64
}

var judged = []metric{
	{"rss", func(s sample) float64 { return float64(s.RSSKiB) }},
	{"heap", func(s sample) float64 { return s.HeapBytes }},
	{"goroutines", func(s sample) float64 { return s.Goroutines }},
	{"fds", func(s sample) float64 { return float64(s.FDs) }},
}

// check is one pass/fail line of the verdict.
type check struct {
	Name string `json:"name"`
	Pass bool   `json:"pass"`
	Note string `json:"note"`
}

// resumeResult is what the main cohort's sseload report says of its
// resuming clients.
type resumeResult struct {
	Lost, Duplicate, Scheduled, Resumed uint64
	Held, Wanted                        int64
}

// judge is the run's verdict: the main cohort's resuming clients saw no
// gap and no duplicate, and each metric at the last sample is within tol
// (0.10 for 10%) of its value at the first sample at or after mark.
func judge(samples []sample, mark time.Duration, tol float64, r resumeResult) []check {
	out := []check{{
		Name: "resume",
		Pass: r.Lost == 0 && r.Duplicate == 0 && r.Scheduled > 0,
		Note: fmt.Sprintf("%d lost, %d duplicate, over %d reconnects with a cursor and %d reopened after an end; %d of %d clients held at the end",
			r.Lost, r.Duplicate, r.Scheduled, r.Resumed, r.Held, r.Wanted),
	}}
	if r.Scheduled == 0 {
		out[0].Note += " (no reconnect with a cursor happened: nothing was checked)"
	}
	var base *sample
	for i := range samples {
		if samples[i].At >= mark {
			base = &samples[i]
			break
		}
	}
	if base == nil || base == &samples[len(samples)-1] {
		return append(out, check{Name: "steady", Note: fmt.Sprintf("no sample after the %s mark to compare with", mark)})
	}
	last := samples[len(samples)-1]
	for _, m := range judged {
		b, e := m.get(*base), m.get(last)
		ratio := math.Inf(1)
		if b > 0 {
			ratio = e / b
		}
		out = append(out, check{
			Name: m.name,
			Pass: b > 0 && math.Abs(ratio-1) <= tol,
			Note: fmt.Sprintf("%.0f at %s, %.0f at %s (%+.1f%%, allowed ±%.0f%%)",
				b, base.At.Round(time.Second), e, last.At.Round(time.Second), (ratio-1)*100, tol*100),
		})
	}
	return out
}
