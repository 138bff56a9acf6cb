package main

// This file reads the proxy (its /proc entries and Caddy's /metrics) and
// writes the run's results: samples.csv, the charts, verdict.json.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/bench/chart"
)

// sampleProxy reads the proxy's RSS and open files from /proc, and its
// heap and goroutines from Caddy's admin /metrics; a reading that fails
// is left 0.
func sampleProxy(pid, adminPort int) sample {
	var s sample
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				s.RSSKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			}
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.FDs = len(ents)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	if resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort)); err == nil {
		m := parseMetrics(bufio.NewScanner(resp.Body), "go_memstats_heap_inuse_bytes", "go_goroutines")
		resp.Body.Close()
		s.HeapBytes, s.Goroutines = m["go_memstats_heap_inuse_bytes"], m["go_goroutines"]
	}
	return s
}

// parseMetrics reads the unlabelled samples named in the Prometheus text
// format.
func parseMetrics(sc *bufio.Scanner, names ...string) map[string]float64 {
	out := make(map[string]float64)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		for _, n := range names {
			if name == n {
				out[n], _ = strconv.ParseFloat(strings.TrimSpace(value), 64)
			}
		}
	}
	return out
}

// loadReport is the part of sseload's JSON report the verdict reads.
type loadReport struct {
	Clients struct {
		Wanted int64 `json:"wanted"`
		Held   int64 `json:"held"`
		Ended  int64 `json:"ended"`
	} `json:"clients"`
	Events struct {
		Delivered uint64 `json:"delivered"`
		Lost      uint64 `json:"lost"`
		Duplicate uint64 `json:"duplicate"`
	} `json:"events"`
	Reconnects struct {
		Scheduled uint64 `json:"scheduled"`
		Resumed   uint64 `json:"resumed"`
		Failed    uint64 `json:"failed_attempts"`
	} `json:"reconnects"`
}

func readLoad(name string) (loadReport, error) {
	var r loadReport
	b, err := os.ReadFile(name)
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	return r, err
}

// finish writes the samples, charts and verdict, prints the verdict, and
// reports whether the run passed.
func finish(c *config, samples []sample) (bool, error) {
	path := func(name string) string { return filepath.Join(c.out, name) }
	var csv strings.Builder
	csv.WriteString("seconds,rss_kib,heap_inuse_bytes,goroutines,fds,events_delivered\n")
	for _, s := range samples {
		fmt.Fprintf(&csv, "%.0f,%d,%.0f,%.0f,%d,%d\n", s.At.Seconds(), s.RSSKiB, s.HeapBytes, s.Goroutines, s.FDs, s.Events)
	}
	if err := os.WriteFile(path("samples.csv"), []byte(csv.String()), 0o644); err != nil {
		return false, err
	}
	for name, ch := range enduranceCharts(samples) {
		f, err := os.Create(path(name + ".svg"))
		if err != nil {
			return false, err
		}
		err = ch.WriteSVG(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return false, err
		}
	}
	main, err := readLoad(path("main.json"))
	if err != nil {
		return false, fmt.Errorf("the main cohort's report: %v", err)
	}
	checks := judge(samples, c.mark, c.tolerance, resumeResult{
		Lost: main.Events.Lost, Duplicate: main.Events.Duplicate,
		Scheduled: main.Reconnects.Scheduled, Resumed: main.Reconnects.Resumed,
		Held: main.Clients.Held, Wanted: main.Clients.Wanted,
	})
	pass := true
	for _, ch := range checks {
		pass = pass && ch.Pass
	}
	v := struct {
		Pass     bool    `json:"pass"`
		Checks   []check `json:"checks"`
		Duration string  `json:"duration"`
		Mark     string  `json:"mark"`
		Slow     string  `json:"slow_cohort,omitempty"`
	}{Pass: pass, Checks: checks, Duration: c.duration.String(), Mark: c.mark.String()}
	if slow, err := readLoad(path("slow.json")); err == nil {
		v.Slow = fmt.Sprintf("%d slow clients, %d cut (streams ended early)", slow.Clients.Wanted, slow.Clients.Ended)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	if err := os.WriteFile(path("verdict.json"), append(b, '\n'), 0o644); err != nil {
		return false, err
	}
	for _, ch := range checks {
		mark := "PASS"
		if !ch.Pass {
			mark = "FAIL"
		}
		fmt.Printf("%s %-10s %s\n", mark, ch.Name, ch.Note)
	}
	if v.Slow != "" {
		fmt.Printf("     slow       %s\n", v.Slow)
	}
	fmt.Printf("main cohort: %d events delivered, %d reconnects with a cursor, %d reopened after an end, %d attempts failed\n",
		main.Events.Delivered, main.Reconnects.Scheduled, main.Reconnects.Resumed, main.Reconnects.Failed)
	verdict := "PASS"
	if !pass {
		verdict = "FAIL"
	}
	fmt.Printf("endurance: %s (%s)\n", verdict, path("verdict.json"))
	return pass, nil
}

// enduranceCharts is the curves over time: RSS and heap, goroutines and
// file descriptors, events delivered per second.
func enduranceCharts(samples []sample) map[string]*chart.Chart {
	series := func(name string, y func(sample) float64) chart.Series {
		s := chart.Series{Name: name}
		for _, x := range samples {
			s.X = append(s.X, x.At.Seconds())
			s.Y = append(s.Y, y(x))
		}
		return s
	}
	rate := chart.Series{Name: "events/s, main cohort"}
	for i := 1; i < len(samples); i++ {
		a, b := samples[i-1], samples[i]
		if dt := (b.At - a.At).Seconds(); dt > 0 && b.Events >= a.Events {
			rate.X = append(rate.X, b.At.Seconds())
			rate.Y = append(rate.Y, float64(b.Events-a.Events)/dt)
		}
	}
	return map[string]*chart.Chart{
		"endurance-memory": {Title: "proxy memory over the run", XLabel: "time", YLabel: "MiB", XTime: true, Series: []chart.Series{
			series("RSS", func(s sample) float64 { return float64(s.RSSKiB) / 1024 }),
			series("heap in use", func(s sample) float64 { return s.HeapBytes / (1 << 20) }),
		}},
		"endurance-goroutines": {Title: "proxy goroutines and open files over the run", XLabel: "time", YLabel: "count", XTime: true, Series: []chart.Series{
			series("goroutines", func(s sample) float64 { return s.Goroutines }),
			series("file descriptors", func(s sample) float64 { return float64(s.FDs) }),
		}},
		"endurance-events": {Title: "events delivered over the run", XLabel: "time", YLabel: "events per second", XTime: true, Series: []chart.Series{rate}},
	}
}
