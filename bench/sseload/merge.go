package main

// This file is -merge: the reports of several sseload processes that ran
// side by side against one system (bench/run.sh's SSELOAD_PROCS), made
// into the report of one run, as if one process had held all their
// clients. The processes' CPU and RSS readings come from the reports that
// have them (run.sh gives the -pid flags to the first process only), and
// are divided by the clients and deliveries of all.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// readReport reads one JSON report.
func readReport(name string) (*report, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	return &r, nil
}

// mergeReports adds up reports of processes that ran side by side.
func mergeReports(rs []*report) (*report, error) {
	if len(rs) == 0 {
		return nil, errors.New("no report to merge")
	}
	out := *rs[0]
	out.Clients, out.Conns, out.Events = clientCounts{}, connCounts{}, eventCounts{}
	out.Reconnects, out.Procs, out.Errors, out.LoadCPU = reconnectCounts{}, nil, nil, 0
	out.Duration = 0
	if out.Pages != nil {
		p := *out.Pages
		p.Wanted, p.Held, p.SilentMembers, p.PerPagePerSecond = 0, 0, 0, 0
		out.Pages = &p
	}
	var h histogram
	for _, r := range rs {
		c := &out.Clients
		c.Wanted += r.Clients.Wanted
		c.Connected += r.Clients.Connected
		c.Failed += r.Clients.Failed
		c.Held += r.Clients.Held
		c.Ended += r.Clients.Ended
		c.Silent += r.Clients.Silent
		c.WrongProto += r.Clients.WrongProto
		c.ConnectSeconds = max(c.ConnectSeconds, r.Clients.ConnectSeconds)
		if p := out.Pages; p != nil {
			if r.Pages == nil || r.Pages.Members != p.Members || r.Pages.Split != p.Split {
				return nil, errors.New("the reports' pages differ: each is of the same -members, and -split or not")
			}
			p.Wanted += r.Pages.Wanted
			p.Held += r.Pages.Held
			p.SilentMembers += r.Pages.SilentMembers
		}
		n := &out.Conns
		n.Wanted += r.Conns.Wanted
		n.Opened += r.Conns.Opened
		n.Failed += r.Conns.Failed
		n.WrongProto += r.Conns.WrongProto
		e := &out.Events
		e.Delivered += r.Events.Delivered
		e.Lost += r.Events.Lost
		e.Duplicate += r.Events.Duplicate
		e.Foreign += r.Events.Foreign
		e.Comments += r.Events.Comments
		e.WireBytes += r.Events.WireBytes
		out.Duration = max(out.Duration, r.Duration)
		rc := &out.Reconnects
		rc.Scheduled += r.Reconnects.Scheduled
		rc.Resumed += r.Reconnects.Resumed
		rc.Failed += r.Reconnects.Failed
		rc.MaxSeconds = max(rc.MaxSeconds, r.Reconnects.MaxSeconds)
		if f := r.Reconnects.FirstEnd; f > 0 && (rc.FirstEnd == 0 || f < rc.FirstEnd) {
			rc.FirstEnd = f
		}
		rc.LastResume = max(rc.LastResume, r.Reconnects.LastResume)
		out.LoadCPU += r.LoadCPU
		out.Procs = append(out.Procs, r.Procs...)
		for msg, k := range r.Errors {
			if out.Errors == nil {
				out.Errors = make(map[string]int)
			}
			out.Errors[msg] += k
		}
		if r.Latency.Count > 0 && len(r.LatencyHist) == 0 {
			return nil, fmt.Errorf("a report (%s %s round %d) has latencies but no latency_hist to merge", r.Labels.Workload, r.Labels.System, r.Labels.Round)
		}
		h.add(r.LatencyHist, int64(r.Latency.Mean*1e6*float64(r.Latency.Count)), int64(r.Latency.Max*1e6))
	}
	if rc := &out.Reconnects; rc.LastResume > rc.FirstEnd && rc.FirstEnd > 0 {
		rc.SpanSeconds = rc.LastResume - rc.FirstEnd
	}
	if out.Duration > 0 {
		out.Events.PerSecond = float64(out.Events.Delivered) / out.Duration
	}
	if out.Events.Delivered > 0 {
		out.Events.WirePerEvent = float64(out.Events.WireBytes) / float64(out.Events.Delivered)
	}
	if p := out.Pages; p != nil && p.Held > 0 && out.Duration > 0 {
		p.PerPagePerSecond = float64(out.Events.Delivered) / out.Duration / float64(p.Held)
	}
	held, _ := out.held() // pages with -members
	out.Latency, out.LatencyHist = h.summary(), h.sparse()
	for i := range out.Procs {
		p := &out.Procs[i]
		p.CPUPerMillion, p.RSSPerClientKiB = 0, 0
		if out.Events.Delivered > 0 {
			p.CPUPerMillion = p.CPUSeconds / float64(out.Events.Delivered) * 1e6
		}
		if held > 0 {
			p.RSSPerClientKiB = float64(p.RSSKiB-p.RSSBeforeKiB) / float64(held)
		}
	}
	// The first report's socket readings are the machine's; they are
	// divided by the clients of all.
	if held > 0 {
		out.Sockets.PerClientKiB = float64(out.Sockets.MemKiB-out.Sockets.MemBeforeKiB) / float64(held)
	}
	return &out, nil
}
