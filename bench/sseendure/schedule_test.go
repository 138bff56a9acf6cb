package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeClock moves only when slept on, and may oversleep by late.
type fakeClock struct {
	now  time.Time
	late time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }
func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) bool {
	c.now = c.now.Add(d + c.late)
	return ctx.Err() == nil
}

func runFake(t *testing.T, late time.Duration, tasks []task, end time.Duration) map[string][]time.Duration {
	t.Helper()
	clk := &fakeClock{now: time.Unix(1_800_000_000, 0), late: late}
	got := make(map[string][]time.Duration)
	runSchedule(t.Context(), clk, tasks, end, func(name string, at time.Duration) {
		got[name] = append(got[name], at)
	})
	return got
}

func TestScheduleHour(t *testing.T) {
	tasks := []task{
		{"reload", time.Minute},
		{"restart-origin", 10 * time.Minute},
		{"new-streams", time.Minute},
		{"sample", 10 * time.Second},
	}
	got := runFake(t, 0, tasks, time.Hour)
	for name, want := range map[string]int{"reload": 59, "restart-origin": 5, "new-streams": 59, "sample": 359} {
		if len(got[name]) != want {
			t.Errorf("%s ran %d times in an hour, want %d", name, len(got[name]), want)
		}
	}
	if r := got["restart-origin"]; !slices.Equal(r, []time.Duration{10 * time.Minute, 20 * time.Minute, 30 * time.Minute, 40 * time.Minute, 50 * time.Minute}) {
		t.Errorf("origin restarts at %v, want every 10 minutes before the end", r)
	}
	for i, at := range got["reload"] {
		if at != time.Duration(i+1)*time.Minute {
			t.Fatalf("reload %d at %v, want %v", i, at, time.Duration(i+1)*time.Minute)
		}
	}
}

func TestScheduleLateWakeUpsDoNotPileUp(t *testing.T) {
	// Every sleep oversleeps by 25 s: a task of every 10 s falls behind,
	// and runs once per wake-up at its latest due time, not three times.
	got := runFake(t, 25*time.Second, []task{{"sample", 10 * time.Second}}, 2*time.Minute)
	s := got["sample"]
	if len(s) == 0 || len(s) > 5 {
		t.Fatalf("sample ran at %v: want a few runs, none piled up", s)
	}
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			t.Errorf("sample times %v do not go up", s)
		}
	}
}

func TestScheduleOrderAndCancel(t *testing.T) {
	tasks := []task{{"a", time.Minute}, {"b", time.Minute}, {"off", 0}}
	clk := &fakeClock{now: time.Unix(0, 0)}
	var order []string
	runSchedule(t.Context(), clk, tasks, 3*time.Minute, func(name string, at time.Duration) {
		order = append(order, fmt.Sprintf("%s@%v", name, at))
	})
	if got := strings.Join(order, " "); got != "a@1m0s b@1m0s a@2m0s b@2m0s" {
		t.Errorf("order %q", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ran := 0
	runSchedule(ctx, &fakeClock{now: time.Unix(0, 0)}, tasks, time.Hour, func(string, time.Duration) { ran++ })
	if ran != 0 {
		t.Errorf("a canceled schedule ran %d actions", ran)
	}
}

func TestJudge(t *testing.T) {
	at := func(m int, rss int64, heap, g float64, fds int) sample {
		return sample{At: time.Duration(m) * time.Minute, RSSKiB: rss, HeapBytes: heap, Goroutines: g, FDs: fds}
	}
	ok := resumeResult{Scheduled: 600, Held: 1000, Wanted: 1000}
	steady := []sample{at(1, 50_000, 1e7, 100, 1100), at(5, 60_000, 2e7, 120, 1120), at(60, 63_000, 2.1e7, 118, 1125)}
	for _, c := range judge(steady, 5*time.Minute, 0.10, ok) {
		if !c.Pass {
			t.Errorf("steady run: %s failed: %s", c.Name, c.Note)
		}
	}
	leak := []sample{at(5, 60_000, 2e7, 120, 1120), at(60, 70_000, 2e7, 200, 1120)}
	failed := map[string]bool{}
	for _, c := range judge(leak, 5*time.Minute, 0.10, resumeResult{Lost: 3, Scheduled: 600}) {
		failed[c.Name] = !c.Pass
	}
	want := map[string]bool{"resume": true, "rss": true, "heap": false, "goroutines": true, "fds": false}
	for name, f := range want {
		if failed[name] != f {
			t.Errorf("leaking run: %s failed=%v, want %v", name, failed[name], f)
		}
	}
	// No reconnect happened: the resume check has nothing to pass on.
	if c := judge(steady, 5*time.Minute, 0.1, resumeResult{})[0]; c.Pass || !strings.Contains(c.Note, "nothing was checked") {
		t.Errorf("resume check without reconnects: %+v", c)
	}
	// No sample after the mark: the steadiness cannot be judged.
	short := judge(steady[:1], 5*time.Minute, 0.1, ok)
	if len(short) != 2 || short[1].Pass {
		t.Errorf("short run: %+v, want a failed steady check", short)
	}
}
