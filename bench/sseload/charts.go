package main

// This file is -charts: the curves of bench/run.sh's results, latency and
// memory per client against the clients held, a line per system and
// workload, written as SVG next to the results.

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sse-fanout/caddy-sse-fanout/bench/chart"
)

// curvePoint is the median of a workload's rounds on one system at one
// number of clients.
type curvePoint struct {
	clients                float64
	p50, p99, max          float64 // ms
	rssPerClient, sockPerC float64 // KiB
}

// curveKey names a line: the system, and the workload without the
// clients run.sh appends to it ("W2@20000" is W2).
type curveKey struct{ system, workload string }

func (k curveKey) String() string { return k.system + " " + k.workload }

// curves groups reports into lines of points, sorted by clients.
func curves(rs []*report) map[curveKey][]curvePoint {
	type at struct {
		k       curveKey
		clients int
	}
	groups := make(map[at][]*report)
	for _, r := range rs {
		wl, _, _ := strings.Cut(r.Labels.Workload, "@")
		_, wanted := r.held() // pages with -members
		a := at{curveKey{r.Labels.System, wl}, wanted}
		groups[a] = append(groups[a], r)
	}
	out := make(map[curveKey][]curvePoint)
	for a, g := range groups {
		pick := func(f func(*report) float64) float64 {
			v := make([]float64, len(g))
			for i, r := range g {
				v[i] = f(r)
			}
			return median(v)
		}
		p := curvePoint{
			clients: pick(func(r *report) float64 { h, _ := r.held(); return float64(h) }),
			p50:     pick(func(r *report) float64 { return r.Latency.P50 }),
			p99:     pick(func(r *report) float64 { return r.Latency.P99 }),
			max:     pick(func(r *report) float64 { return r.Latency.Max }),
			rssPerClient: pick(func(r *report) float64 {
				s, _, _ := r.costs()
				return s.RSSPerClientKiB
			}),
			sockPerC: pick(func(r *report) float64 { return r.Sockets.PerClientKiB }),
		}
		out[a.k] = append(out[a.k], p)
	}
	for k := range out {
		slices.SortFunc(out[k], func(a, b curvePoint) int { return cmp.Compare(a.clients, b.clients) })
	}
	return out
}

// median of v, which it sorts; 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// curveCharts is the charts of the curves: name (file stem) to chart.
func curveCharts(cs map[curveKey][]curvePoint) map[string]*chart.Chart {
	keys := slices.SortedFunc(func(yield func(curveKey) bool) {
		for k := range cs {
			if !yield(k) {
				return
			}
		}
	}, func(a, b curveKey) int { return cmp.Compare(a.String(), b.String()) })
	mk := func(title, ylabel string, y func(curvePoint) float64) *chart.Chart {
		c := &chart.Chart{Title: title, XLabel: "clients held", YLabel: ylabel, LogX: true}
		for _, k := range keys {
			s := chart.Series{Name: k.String()}
			for _, p := range cs[k] {
				s.X = append(s.X, p.clients)
				s.Y = append(s.Y, y(p))
			}
			c.Series = append(c.Series, s)
		}
		return c
	}
	return map[string]*chart.Chart{
		"latency-p99":       mk("p99 latency against clients", "p99 latency, ms", func(p curvePoint) float64 { return p.p99 }),
		"latency-max":       mk("max latency against clients", "max latency, ms", func(p curvePoint) float64 { return p.max }),
		"memory-per-client": mk("server RSS per client against clients", "RSS per client, KiB", func(p curvePoint) float64 { return p.rssPerClient }),
		"sockets-per-client": mk("kernel TCP memory per client (both ends, loopback)", "socket memory per client, KiB",
			func(p curvePoint) float64 { return p.sockPerC }),
	}
}

// writeCurveCharts writes the charts of the reports in files into dir.
func writeCurveCharts(dir string, files []string) error {
	var rs []*report
	for _, name := range files {
		r, err := readReport(name)
		if err != nil {
			return err
		}
		rs = append(rs, r)
	}
	for name, c := range curveCharts(curves(rs)) {
		f, err := os.Create(filepath.Join(dir, name+".svg"))
		if err != nil {
			return err
		}
		err = c.WriteSVG(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing %s: %v", name, err)
		}
	}
	return nil
}
