package main

// This file is what keeps a client's stream going over time: -reconnect
// reopens a stream that ended with its cursor (Last-Event-ID), on the next
// -url, as a browser's EventSource does behind a balancer; -reconnect-every
// closes a share of the clients in turn and reopens them with their cursor
// at once; -read-rate makes slow clients; -progress prints a line now and
// then. A client's cursor, and its loss and duplicate checks, carry over
// its reconnects, so a resumed stream with a gap or a repeat is counted.

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"time"
)

// reconnectCounts is what -reconnect and -reconnect-every did.
type reconnectCounts struct {
	Scheduled int64 `json:"scheduled"`       // streams closed by -reconnect-every and reopened
	Resumed   int64 `json:"resumed"`         // streams that ended unasked and were reopened
	Failed    int64 `json:"failed_attempts"` // reopening attempts that failed (each retried)
	// MaxSeconds is the longest time from an unasked end to the stream's
	// reopening; FirstEnd and LastResume bound them all, in Unix seconds,
	// so SpanSeconds is how long the clients of a killed server took to
	// all be back.
	MaxSeconds  float64 `json:"max_s"`
	FirstEnd    float64 `json:"first_end_unix,omitempty"`
	LastResume  float64 `json:"last_resume_unix,omitempty"`
	SpanSeconds float64 `json:"span_s"`
}

// resumeStats gathers reconnectCounts as they happen.
type resumeStats struct {
	mu sync.Mutex
	reconnectCounts
}

// ended notes an unasked end at t.
func (r *resumeStats) ended(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u := unixSeconds(t); r.FirstEnd == 0 || u < r.FirstEnd {
		r.FirstEnd = u
	}
}

// resumed notes a stream reopened at t, which ended at end (zero for a
// scheduled reconnect).
func (r *resumeStats) resumed(end, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if end.IsZero() {
		r.Scheduled++
		return
	}
	r.Resumed++
	r.MaxSeconds = max(r.MaxSeconds, t.Sub(end).Seconds())
	r.LastResume = max(r.LastResume, unixSeconds(t))
}

func (r *resumeStats) failed() {
	r.mu.Lock()
	r.Failed++
	r.mu.Unlock()
}

func (r *resumeStats) counts() reconnectCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.reconnectCounts
	if c.LastResume > c.FirstEnd && c.FirstEnd > 0 {
		c.SpanSeconds = c.LastResume - c.FirstEnd
	}
	return c
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// retryDelay is how long a client waits before reopening its stream:
// -retry, spread by ±50% so that the clients of a server that went away
// do not all come back at once.
func retryDelay(base time.Duration) time.Duration {
	if base <= 0 {
		return 0
	}
	return base/2 + rand.N(base)
}

// batch is the clients that the round-th -reconnect-every closes: a
// fraction of n, taken in turn, so that every client's turn comes.
func batch(round, n int, fraction float64) (start, count int) {
	count = int(float64(n)*fraction + 0.5)
	if count <= 0 || n == 0 {
		return 0, 0
	}
	count = min(count, n)
	return (round * count) % n, count
}

// cycleReconnects closes a -reconnect-fraction of the clients every
// -reconnect-every until ctx ends; each reopens at once with its cursor.
func (l *load) cycleReconnects(ctx context.Context) {
	t := time.NewTicker(l.cfg.reconnectEvery)
	defer t.Stop()
	for round := 0; ; round++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := len(l.clients) // set before this goroutine starts
		start, count := batch(round, n, l.cfg.reconnectFraction)
		for i := range count {
			l.clients[(start+i)%n].cut()
		}
	}
}

// cut closes c's stream so that it reopens with its cursor at once.
func (c *client) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closer != nil && c.connected.Load() {
		c.cutting = true
		c.closer.Close()
	}
}

// takeCut reports whether c's stream was closed by cut, and clears it.
func (c *client) takeCut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	cut := c.cutting
	c.cutting = false
	return cut
}

// slowReader reads at most rate bytes a second, a few hundred at a time:
// a client on a slow link, which the server should cut once it falls too
// far behind.
type slowReader struct {
	r    io.Reader
	rate int
}

func (s *slowReader) Read(p []byte) (int, error) {
	p = p[:min(len(p), max(s.rate/10, 1))]
	n, err := s.r.Read(p)
	time.Sleep(time.Duration(n) * time.Second / time.Duration(s.rate))
	return n, err
}

// progressLine is one -progress line.
func (l *load) progressLine(elapsed time.Duration, events uint64, perSecond float64) string {
	var lost, dup uint64
	for _, c := range l.clients[:l.started.Load()] {
		lost += c.lost.Load()
		dup += c.dup.Load()
	}
	r := l.resume.counts()
	return fmt.Sprintf("sseload: %4.0fs: %d/%d connected, %d open, %d failed, %d ended; %d events (%.0f/s); lost %d, dup %d; %d reconnected, %d resumed",
		elapsed.Seconds(), l.connected.Load(), len(l.clients), l.open.Load(), l.failed.Load(), l.ended.Load(),
		events, perSecond, lost, dup, r.Scheduled, r.Resumed)
}

// printProgress writes a progress line to stderr every -progress until
// ctx ends.
func (l *load) printProgress(ctx context.Context, start time.Time) {
	t := time.NewTicker(l.cfg.progress)
	defer t.Stop()
	last, lastAt := l.events.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			ev := l.events.Load()
			rate := float64(ev-last) / now.Sub(lastAt).Seconds()
			last, lastAt = ev, now
			fmt.Fprintln(os.Stderr, l.progressLine(now.Sub(start), ev, rate))
		}
	}
}
