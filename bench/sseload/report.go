package main

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// This file reads the measured processes from /proc and writes the report.

// proc is a process to measure.
type proc struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
}

// procSample is one reading of a process.
type procSample struct {
	cpu    time.Duration // user + system time so far
	rssKiB int64
	err    error
}

// clockTick is the unit of the times in /proc/<pid>/stat: USER_HZ, which
// is 100 on every Linux architecture Go runs on.
const clockTick = 10 * time.Millisecond

func sampleProcs(ps []proc) []procSample {
	out := make([]procSample, len(ps))
	for i, p := range ps {
		out[i] = sampleProc(p.PID)
	}
	return out
}

func sampleProc(pid int) procSample {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{err: err}
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14 and stime 15.
	i := bytes.LastIndexByte(stat, ')')
	fields := strings.Fields(string(stat[i+1:]))
	if i < 0 || len(fields) < 13 {
		return procSample{err: fmt.Errorf("pid %d: unexpected /proc stat", pid)}
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	s := procSample{cpu: time.Duration(utime+stime) * clockTick}

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{err: err}
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			s.rssKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return s
}

// selfCPU is this process's user + system time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procResult is what was measured of one process.
type procResult struct {
	proc
	CPUSeconds      float64 `json:"cpu_s"`              // in the window
	CPUPerMillion   float64 `json:"cpu_s_per_1m"`       // CPU seconds per 1M deliveries
	RSSBeforeKiB    int64   `json:"rss_before_kib"`     // before the clients connected
	RSSKiB          int64   `json:"rss_kib"`            // at the end of the window
	RSSPerClientKiB float64 `json:"rss_per_client_kib"` // growth since before, per client held
	Error           string  `json:"error,omitempty"`    // the process could not be read
}

func procReport(p proc, before, cpu0, cpu1 procSample, held int64, delivered uint64) procResult {
	r := procResult{proc: p}
	for _, s := range []procSample{before, cpu0, cpu1} {
		if s.err != nil {
			r.Error = s.err.Error()
			return r
		}
	}
	r.CPUSeconds = (cpu1.cpu - cpu0.cpu).Seconds()
	if delivered > 0 {
		r.CPUPerMillion = r.CPUSeconds / float64(delivered) * 1e6
	}
	r.RSSBeforeKiB, r.RSSKiB = before.rssKiB, cpu1.rssKiB
	if held > 0 {
		r.RSSPerClientKiB = float64(cpu1.rssKiB-before.rssKiB) / float64(held)
	}
	return r
}

// labels name a run in a benchmark.
type labels struct {
	Workload string `json:"workload,omitempty"`
	System   string `json:"system,omitempty"`
	Round    int    `json:"round,omitempty"`
}

type clientCounts struct {
	Wanted         int     `json:"wanted"`
	Connected      int64   `json:"connected"`       // got their 200
	Failed         int64   `json:"failed"`          // never did
	Held           int64   `json:"held"`            // still connected at the end of the window
	Ended          int64   `json:"ended"`           // connected, but their stream ended before the run did
	Silent         int64   `json:"silent"`          // connected, but received no event in the window
	WrongProto     int64   `json:"wrong_proto"`     // answered in an HTTP version other than -proto's (counted in failed too)
	ConnectSeconds float64 `json:"connect_seconds"` // how long connecting took
}

// connCounts is the connections the streams went over.
type connCounts struct {
	Wanted     int              `json:"wanted"`         // clients / streams-per-conn, rounded up
	Opened     int64            `json:"opened"`         // TCP, TLS or QUIC handshake done
	Failed     int64            `json:"failed"`         // could not be opened
	WrongProto int64            `json:"wrong_proto"`    // opened, but did not negotiate -proto's protocol, and closed
	ALPN       map[string]int64 `json:"alpn,omitempty"` // opened connections by negotiated protocol ("none": no ALPN); absent for h1
	TLS        map[string]int64 `json:"tls,omitempty"`  // opened connections by TLS version, cipher suite and key exchange; absent for h1
}

type eventCounts struct {
	Delivered uint64  `json:"delivered"` // events received in the window, all clients
	PerSecond float64 `json:"per_second"`
	Lost      uint64  `json:"lost"`      // sequence numbers a client skipped
	Duplicate uint64  `json:"duplicate"` // events a client got again, or out of order
	Foreign   uint64  `json:"foreign"`   // data lines not in sseorigin's format
	// Comments is the comment lines received in the window, such as
	// sse_fanout's ": keepalive": with no events (W4) the server's CPU per
	// comment is what a keepalive costs.
	Comments uint64 `json:"comments,omitempty"`
	// WireBytes is the bytes of the clients' bodies that came over the
	// wire in the window, before decompression; WirePerEvent is per event
	// delivered. Absent in reports made before they were counted.
	WireBytes    uint64  `json:"wire_bytes,omitempty"`
	WirePerEvent float64 `json:"wire_bytes_per_event,omitempty"`
}

// report is the result of one run.
type report struct {
	Labels   labels  `json:"labels"`
	URL      string  `json:"url"`
	Date     string  `json:"date"`
	Duration float64 `json:"duration_s"` // the measurement window
	// Proto is -proto; empty in reports made before it existed, which
	// were h1.
	Proto string `json:"proto,omitempty"`
	// StreamsPerConn is -streams-per-conn; 0 in reports made before it
	// existed, which had one stream per connection.
	StreamsPerConn int            `json:"streams_per_conn,omitempty"`
	Clients        clientCounts   `json:"clients"`
	Conns          connCounts     `json:"connections"`
	Events         eventCounts    `json:"events"`
	Latency        latencySummary `json:"latency_ms"`
	// LatencyHist is the latency histogram's non-empty buckets, as
	// [bucket, count] pairs, so that the reports of several sseload
	// processes can be merged exactly (-merge).
	LatencyHist [][2]uint64     `json:"latency_hist,omitempty"`
	Reconnects  reconnectCounts `json:"reconnects"`
	// Pages is the clients as pages of -members (page.go); nil without
	// it. The per-client figures of Procs and Sockets are then per page.
	Pages *pageCounts `json:"pages,omitempty"`
	// Sockets is the kernel's TCP sockets from /proc/net/sockstat, before
	// the clients connected and at the end of the window.
	Sockets sockets        `json:"sockets"`
	Procs   []procResult   `json:"procs,omitempty"`
	LoadCPU float64        `json:"load_cpu_s"` // this tool's own CPU in the window
	Origin  map[string]any `json:"origin_stats,omitempty"`
	Errors  map[string]int `json:"errors,omitempty"` // a sample of error messages, with counts
	// Encodings counts the responses by Content-Encoding ("identity":
	// none); -accept-encoding asks for one.
	Encodings map[string]int64 `json:"content_encodings,omitempty"`
}

// protoName is the report's protocol, h1 for reports older than -proto.
func (r *report) protoName() string {
	if r.Proto == "" {
		return protoH1
	}
	return r.Proto
}

// streamsPerConn is the report's streams per connection, 1 for reports
// older than -streams-per-conn.
func (r *report) streamsPerConn() int {
	return max(r.StreamsPerConn, 1)
}

// costs sums the measured processes: the server's, the origin's, and the
// publisher's.
func (r *report) costs() (server, origin, publisher procResult) {
	for _, p := range r.Procs {
		sum := &server
		switch p.Name {
		case "origin":
			sum = &origin
		case "publisher":
			sum = &publisher
		}
		sum.CPUSeconds += p.CPUSeconds
		sum.CPUPerMillion += p.CPUPerMillion
		sum.RSSBeforeKiB += p.RSSBeforeKiB
		sum.RSSKiB += p.RSSKiB
		sum.RSSPerClientKiB += p.RSSPerClientKiB
	}
	return server, origin, publisher
}

func (r *report) writeText(w io.Writer) {
	l := r.Labels
	if l.Workload != "" || l.System != "" {
		fmt.Fprintf(w, "%s %s round %d\n", l.Workload, l.System, l.Round)
	}
	c := r.Clients
	fmt.Fprintf(w, "clients:  %d wanted, %d connected in %.1fs, %d held, %d failed, %d ended early, %d silent",
		c.Wanted, c.Connected, c.ConnectSeconds, c.Held, c.Failed, c.Ended, c.Silent)
	if c.WrongProto > 0 {
		fmt.Fprintf(w, ", %d answered in another HTTP version", c.WrongProto)
	}
	fmt.Fprintln(w)
	unit := "client"
	if p := r.Pages; p != nil {
		unit = "page"
		how := "multiplexed on one stream"
		if p.Split {
			how = "on a stream each"
		}
		fmt.Fprintf(w, "pages:    %d wanted, %d held, of %d members %s; %.2f deliveries per page per second; %d members silent\n",
			p.Wanted, p.Held, p.Members, how, p.PerPagePerSecond, p.SilentMembers)
	}
	n := r.Conns
	perConn := r.streamsPerConn()
	if r.Pages != nil && r.Pages.Split && multiplexed(r.protoName()) {
		perConn *= r.Pages.Members // -streams-per-conn counts pages
	}
	fmt.Fprintf(w, "conns:    %s, %d streams each: %d wanted, %d opened, %d failed, %d not %s",
		r.protoName(), perConn, n.Wanted, n.Opened, n.Failed, n.WrongProto, r.protoName())
	for _, m := range []struct {
		name   string
		counts map[string]int64
	}{{"ALPN", n.ALPN}, {"TLS", n.TLS}} {
		if len(m.counts) > 0 {
			fmt.Fprintf(w, "; %s:", m.name)
			for _, k := range slices.Sorted(maps.Keys(m.counts)) {
				fmt.Fprintf(w, " %s ×%d", k, m.counts[k])
			}
		}
	}
	fmt.Fprintln(w)
	e := r.Events
	fmt.Fprintf(w, "events:   %d delivered in %.1fs (%.0f/s), %d lost, %d duplicate",
		e.Delivered, r.Duration, e.PerSecond, e.Lost, e.Duplicate)
	if e.Foreign > 0 {
		fmt.Fprintf(w, ", %d not in sseorigin's format", e.Foreign)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "wire:     %d bytes in the window, %.1f per event;", e.WireBytes, e.WirePerEvent)
	for _, k := range slices.Sorted(maps.Keys(r.Encodings)) {
		fmt.Fprintf(w, " %s ×%d", k, r.Encodings[k])
	}
	fmt.Fprintln(w)
	lat := r.Latency
	fmt.Fprintf(w, "latency:  p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms, mean %.2f ms\n",
		lat.P50, lat.P90, lat.P99, lat.P999, lat.Max, lat.Mean)
	for _, p := range r.Procs {
		if p.Error != "" {
			fmt.Fprintf(w, "%-9s pid %d: %s\n", p.Name+":", p.PID, p.Error)
			continue
		}
		fmt.Fprintf(w, "%-9s pid %d: cpu %.2f s (%.2f s per 1M deliveries), rss %.1f MiB (%.1f MiB before, %.1f KiB per %s)\n",
			p.Name+":", p.PID, p.CPUSeconds, p.CPUPerMillion, float64(p.RSSKiB)/1024, float64(p.RSSBeforeKiB)/1024, p.RSSPerClientKiB, unit)
	}
	fmt.Fprintf(w, "sseload:  cpu %.2f s\n", r.LoadCPU)
	if r.Origin != nil {
		fmt.Fprintf(w, "stats:    %v\n", r.Origin)
	}
	if rc := r.Reconnects; rc.Scheduled+rc.Resumed+rc.Failed > 0 {
		back := "all back"
		if rc.Resumed < r.Clients.Ended {
			back = fmt.Sprintf("%d of %d ended not back by the end", r.Clients.Ended-rc.Resumed, r.Clients.Ended)
		}
		fmt.Fprintf(w, "resume:   %d reopened by -reconnect-every, %d after an end, %d attempts failed; longest %.2f s, the last back %.2f s after the first end; %s\n",
			rc.Scheduled, rc.Resumed, rc.Failed, rc.MaxSeconds, rc.SpanSeconds, back)
	}
	if e.Comments > 0 {
		fmt.Fprintf(w, "comments: %d comment lines in the window (keepalives, and any other a server sends)\n", e.Comments)
	}
	so := r.Sockets
	fmt.Fprintf(w, "sockets:  %d TCP in use, kernel TCP memory %.1f MiB (%.1f MiB before, %.2f KiB per %s, both ends)\n",
		so.InUse, float64(so.MemKiB)/1024, float64(so.MemBeforeKiB)/1024, so.PerClientKiB, unit)
	for msg, n := range r.Errors {
		fmt.Fprintf(w, "error:    %dx %s\n", n, msg)
	}
}

// sockstat is the TCP line of /proc/net/sockstat.
type sockstat struct {
	inUse    int64 // TCP sockets in use
	memPages int64 // pages of memory the kernel's TCP sockets hold
}

// readSockstat reads /proc/net/sockstat, or returns zeros.
func readSockstat() sockstat {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return sockstat{}
	}
	return parseSockstat(string(b))
}

// parseSockstat reads the TCP line: "TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1".
func parseSockstat(s string) sockstat {
	var st sockstat
	for _, line := range strings.Split(s, "\n") {
		rest, ok := strings.CutPrefix(line, "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			n, _ := strconv.ParseInt(f[i+1], 10, 64)
			switch f[i] {
			case "inuse":
				st.inUse = n
			case "mem":
				st.memPages = n
			}
		}
	}
	return st
}

// sockets is the kernel's TCP socket memory, which a process's RSS does
// not count. On loopback it holds both ends of every connection, the
// clients' and the server's, and every other TCP socket of the machine.
type sockets struct {
	InUseBefore  int64   `json:"tcp_inuse_before"`
	InUse        int64   `json:"tcp_inuse"`
	MemBeforeKiB int64   `json:"tcp_mem_before_kib"`
	MemKiB       int64   `json:"tcp_mem_kib"`
	PerClientKiB float64 `json:"tcp_mem_per_client_kib"` // growth since before, per client held
}

func sockstatReport(before, after sockstat, held int64) sockets {
	page := int64(os.Getpagesize()) / 1024
	s := sockets{
		InUseBefore: before.inUse, InUse: after.inUse,
		MemBeforeKiB: before.memPages * page, MemKiB: after.memPages * page,
	}
	if held > 0 {
		s.PerClientKiB = float64(s.MemKiB-s.MemBeforeKiB) / float64(held)
	}
	return s
}
