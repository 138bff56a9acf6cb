package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCurveChartsFromReports(t *testing.T) {
	dir := t.TempDir()
	var files []string
	write := func(name, workload, system string, clients int64, p99 float64) {
		r := &report{Labels: labels{Workload: workload, System: system}, Clients: clientCounts{Wanted: int(clients), Held: clients},
			Latency: latencySummary{P99: p99}, Procs: []procResult{{proc: proc{Name: "server"}, RSSPerClientKiB: 6}}}
		b, _ := json.Marshal(r)
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	write("a1.json", "W2@1000", "sse_fanout", 1000, 5)
	write("a2.json", "W2@1000", "sse_fanout", 1000, 7) // a second round: the median is 6
	write("b.json", "W2@10000", "sse_fanout", 10000, 40)
	write("c.json", "W2@1000", "nchan", 1000, 3)
	if err := writeCurveCharts(dir, files); err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "latency-p99.svg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`data-series="nchan W2" data-points="1"`, `data-series="sse_fanout W2" data-points="2"`} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("latency chart lacks %s", want)
		}
	}
	cs := curves([]*report{})
	if len(cs) != 0 {
		t.Errorf("curves of nothing: %v", cs)
	}
	for _, name := range []string{"latency-max", "memory-per-client", "sockets-per-client"} {
		if _, err := os.Stat(filepath.Join(dir, name+".svg")); err != nil {
			t.Error(err)
		}
	}
}
