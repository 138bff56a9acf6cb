package main

// Tests of what keeps streams going: reconnects with a cursor, scheduled
// and after the server closed them, checked for gaps and duplicates; the
// batches of -reconnect-every; the slow reader; -merge; sockstat.

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestBatchTakesEveryClientInTurn(t *testing.T) {
	seen := make(map[int]int)
	for round := range 10 {
		start, count := batch(round, 25, 0.1) // 2.5 rounds to 3 a time
		if count != 3 {
			t.Fatalf("round %d: count %d, want 3", round, count)
		}
		for i := range count {
			seen[(start+i)%25]++
		}
	}
	if len(seen) != 25 {
		t.Errorf("10 rounds of 3 of 25 clients reached %d of them, want all", len(seen))
	}
	if _, n := batch(0, 10, 0); n != 0 {
		t.Errorf("fraction 0 closes %d", n)
	}
	if s, n := batch(3, 10, 1); n != 10 || s != 0 {
		t.Errorf("fraction 1: start %d count %d, want every client", s, n)
	}
}

func TestReconnectResumesWithCursor(t *testing.T) {
	srv := newAddrServer(t, false)
	cfg := &config{
		url: srv.URL + "/a," + srv.URL + "/b", clients: 6, ramp: 1000, proto: protoH1, streamsPerConn: 1,
		reconnect: true, retry: 20 * time.Millisecond, reconnectEvery: 60 * time.Millisecond, reconnectFraction: 0.5,
		duration: 600 * time.Millisecond, connectTimeout: 5 * time.Second,
	}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	// Halfway through, the server drops every connection: the clients
	// come back on the other -url, with their cursor.
	go func() {
		time.Sleep(300 * time.Millisecond)
		srv.CloseClientConnections()
	}()
	rep, err := run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	rc := rep.Reconnects
	// A client whose stream was being reopened by -reconnect-every when
	// the server dropped it counts as scheduled, not resumed.
	if rc.Scheduled < 6 || rc.Resumed < 1 {
		t.Errorf("reconnects %+v: want at least 6 scheduled and some after the drop", rc)
	}
	if rc.SpanSeconds <= 0 || rc.MaxSeconds <= 0 || rc.MaxSeconds > 2 {
		t.Errorf("reconnects %+v: want a span and a longest time back, under 2 s", rc)
	}
	if e := rep.Events; e.Delivered == 0 || e.Lost != 0 || e.Duplicate != 0 {
		t.Errorf("events %+v: want some, none lost or repeated over the reconnects", e)
	}
	if rep.Clients.Held != 6 || rep.Clients.Failed != 0 {
		t.Errorf("clients %+v: want all 6 back", rep.Clients)
	}
}

func TestReconnectCountsAGap(t *testing.T) {
	// An origin with no history: a client that comes back with its
	// cursor misses what was sent meanwhile, and the report says so.
	srv := newAddrServer(t, false)
	cfg := &config{
		url: srv.URL + "/x", clients: 2, ramp: 1000, proto: protoH1, streamsPerConn: 1,
		reconnect: true, retry: 100 * time.Millisecond, duration: 500 * time.Millisecond, connectTimeout: 5 * time.Second,
	}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		srv.CloseClientConnections()
	}()
	// The origin keeps 4096 events, so resuming loses nothing; the gap
	// is made by a client cursor set past what the origin has sent.
	rep, err := run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events.Lost != 0 || rep.Reconnects.Resumed < 2 {
		t.Errorf("events %+v, reconnects %+v", rep.Events, rep.Reconnects)
	}
	l := &load{cfg: cfg}
	l.measuring.Store(true)
	c := &client{last: 10}
	l.event(c, 14, time.Now().UnixNano(), &c.last) // 11 to 13 missed
	l.event(c, 12, time.Now().UnixNano(), &c.last) // went back
	if c.lost.Load() != 3 || c.dup.Load() != 1 || c.last != 14 {
		t.Errorf("lost %d dup %d last %d, want 3, 1, 14", c.lost.Load(), c.dup.Load(), c.last)
	}
}

func TestSlowReaderRate(t *testing.T) {
	r := &slowReader{r: bytes.NewReader(make([]byte, 100)), rate: 1000}
	start := time.Now()
	buf := make([]byte, 64)
	total := 0
	for {
		n, err := r.Read(buf)
		total += n
		if n > 1000/10 {
			t.Fatalf("read %d bytes at once at 1000 B/s, want at most 100", n)
		}
		if err != nil {
			break
		}
	}
	if el := time.Since(start); total != 100 || el < 90*time.Millisecond {
		t.Errorf("read %d bytes in %v, want 100 in at least 0.1 s", total, el)
	}
}

func TestMergeReports(t *testing.T) {
	var h1, h2 histogram
	for range 99 {
		h1.record(1e6) // 1 ms
	}
	h2.record(50e6) // 50 ms
	a := &report{
		Clients:     clientCounts{Wanted: 100, Connected: 100, Held: 99},
		Events:      eventCounts{Delivered: 99, Lost: 1},
		Latency:     h1.summary(),
		LatencyHist: h1.sparse(),
		Duration:    10,
		Procs:       []procResult{{proc: proc{Name: "server", PID: 1}, CPUSeconds: 2, RSSBeforeKiB: 1000, RSSKiB: 3000}},
		Reconnects:  reconnectCounts{Resumed: 5, FirstEnd: 100, LastResume: 101, MaxSeconds: 1},
		Sockets:     sockets{MemBeforeKiB: 100, MemKiB: 500},
	}
	b := &report{
		Clients:     clientCounts{Wanted: 100, Connected: 100, Held: 101},
		Events:      eventCounts{Delivered: 1, Duplicate: 2},
		Latency:     h2.summary(),
		LatencyHist: h2.sparse(),
		Duration:    10.5,
		Reconnects:  reconnectCounts{Resumed: 7, FirstEnd: 99.5, LastResume: 103, MaxSeconds: 3},
	}
	m, err := mergeReports([]*report{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if m.Clients.Held != 200 || m.Events.Delivered != 100 || m.Events.Lost != 1 || m.Events.Duplicate != 2 {
		t.Errorf("merged clients %+v events %+v", m.Clients, m.Events)
	}
	if m.Latency.Count != 100 || m.Latency.P50 != 1 || m.Latency.Max != 50 || m.Latency.P99 != 1 {
		t.Errorf("merged latency %+v, want 100 events, p50 and p99 1 ms, max 50 ms", m.Latency)
	}
	if p := m.Procs[0]; p.RSSPerClientKiB != 10 || p.CPUPerMillion != 2/100.0*1e6 {
		t.Errorf("merged proc %+v, want 10 KiB per client of 200, CPU per million of 100 deliveries", p)
	}
	if rc := m.Reconnects; rc.Resumed != 12 || rc.SpanSeconds != 3.5 || rc.MaxSeconds != 3 {
		t.Errorf("merged reconnects %+v", rc)
	}
	if m.Sockets.PerClientKiB != 2 {
		t.Errorf("merged socket memory per client %v, want 400 KiB / 200", m.Sockets.PerClientKiB)
	}
	a.LatencyHist = nil
	if _, err := mergeReports([]*report{a}); err == nil || !strings.Contains(err.Error(), "latency_hist") {
		t.Errorf("merging a report without its histogram: %v", err)
	}
}

func TestParseSockstat(t *testing.T) {
	s := parseSockstat("sockets: used 289\nTCP: inuse 11 orphan 0 tw 3 alloc 14 mem 7\nUDP: inuse 2 mem 1\n")
	if s.inUse != 11 || s.memPages != 7 {
		t.Errorf("parsed %+v, want inuse 11, mem 7", s)
	}
	r := sockstatReport(sockstat{memPages: 1}, sockstat{inUse: 5, memPages: 3}, 2)
	if r.InUse != 5 || r.PerClientKiB != float64(2*(4096/1024))/2 && r.PerClientKiB <= 0 {
		t.Errorf("report %+v", r)
	}
}

// The clients of a server that went away spread evenly over the others,
// and a client whose attempt failed tries each of the others in turn.
func TestReconnectSpreadsOverTheOtherTargets(t *testing.T) {
	const n, clients = 7, 6000
	got := make([]int, n)
	for i := range clients {
		got[nextTarget(0, i, n, true)]++
	}
	if got[0] != 0 {
		t.Errorf("%d clients went back to the target that went away", got[0])
	}
	for target := 1; target < n; target++ {
		if got[target] != clients/(n-1) {
			t.Errorf("target %d took %d clients, want %d: %v", target, got[target], clients/(n-1), got)
		}
	}
	seen := map[int]bool{}
	for target, i := 3, 0; i < n; i++ {
		seen[target] = true
		target = nextTarget(target, 5, n, false)
	}
	if len(seen) != n {
		t.Errorf("failed attempts visited %d of %d targets", len(seen), n)
	}
	if nextTarget(0, 9, 1, true) != 0 {
		t.Error("with one target, a client goes back to it")
	}
}
