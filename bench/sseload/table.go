package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
)

// This file is -table: JSON reports in, one markdown table out.

// row is the medians of one workload, protocol and system over its
// rounds.
type row struct {
	workload, system string
	proto            protoKey
	rounds           int
	wanted           int
	held             float64
	p50, p99, max    float64
	delivered        float64
	lost             float64
	serverCPU        float64 // seconds in the window
	serverPerM       float64 // seconds per 1M deliveries
	originCPU        float64
	originPerM       float64
	publisherPerM    float64     // a publisher's, not counted in the ratios
	rssPerClient     float64     // KiB, server only
	wirePerEvent     float64     // bytes on the wire per event delivered; NaN: not counted
	encodings        []string    // the Content-Encodings the clients got, identity aside
	originConns      float64     // NaN: no origin stats
	publisher        bool        // fed by a publisher, not an origin stream
	idle             bool        // no events were delivered
	hasOrigin        bool        // an origin process was measured
	connsWrong       int64       // connections that did not negotiate the protocol, all rounds
	connsFailed      int64       // connections that could not be opened, all rounds
	pages            *pageCounts // -members: the first round's; nil for clients that are streams
	perPage          float64     // -members: deliveries per page per second
}

// protoKey is a run's protocol and streams per connection.
type protoKey struct {
	proto   string
	streams int
}

// protoOrder ranks the protocols in the order -proto lists them.
var protoOrder = []string{protoH1, protoH1TLS, protoH2, protoH3}

func (p protoKey) less(q protoKey) bool {
	if p.proto != q.proto {
		i, j := slices.Index(protoOrder, p.proto), slices.Index(protoOrder, q.proto)
		if i != j {
			return i < j
		}
		return p.proto < q.proto
	}
	return p.streams < q.streams
}

// String is the protocol cell: "h2", or "h2 ×10" for 10 streams per
// connection.
func (p protoKey) String() string {
	if p.streams > 1 {
		return fmt.Sprintf("%s ×%d", p.proto, p.streams)
	}
	return p.proto
}

func printTable(w io.Writer, files []string, order string) error {
	if len(files) == 0 {
		return fmt.Errorf("-table needs the JSON reports as arguments")
	}
	type key struct {
		workload string
		proto    protoKey
		system   string
	}
	groups := make(map[key][]*report)
	var workloads, systems []string
	var anyPages bool
	var protos []protoKey
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		r := new(report)
		if err := json.Unmarshal(b, r); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		k := key{r.Labels.Workload, protoKey{r.protoName(), r.streamsPerConn()}, r.Labels.System}
		if !slices.Contains(protos, k.proto) {
			protos = append(protos, k.proto)
		}
		if !slices.Contains(workloads, k.workload) {
			workloads = append(workloads, k.workload)
		}
		if !slices.Contains(systems, k.system) {
			systems = append(systems, k.system)
		}
		groups[k] = append(groups[k], r)
		anyPages = anyPages || r.Pages != nil
	}
	sort.Strings(workloads)
	slices.SortFunc(protos, func(a, b protoKey) int {
		switch {
		case a.less(b):
			return -1
		case b.less(a):
			return 1
		}
		return 0
	})
	// The systems named in order come first, in that order; the ratio rows
	// compare the first with each of the others.
	named := strings.Fields(order)
	sort.SliceStable(systems, func(i, j int) bool {
		rank := func(s string) int {
			if k := slices.Index(named, s); k >= 0 {
				return k
			}
			return len(named)
		}
		return rank(systems[i]) < rank(systems[j])
	})

	fmt.Fprintln(w, tableHead)
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, wl := range workloads {
		for _, p := range protos {
			var rows []row
			for _, sys := range systems {
				if rs := groups[key{wl, p, sys}]; len(rs) > 0 {
					rows = append(rows, summarize(wl, p, sys, rs))
				}
			}
			printRows(w, rows)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Each cell is the median over the rounds. Latency is from the origin's send stamp to the client's read.")
	fmt.Fprintln(w, "CPU is the server's user+system time in the window per 1M deliveries, with the origin's (or publisher's) in")
	fmt.Fprintln(w, "parentheses; the ratio rows compare server+origin, leaving out a publisher. RSS per client is the server's")
	fmt.Fprintln(w, "growth from before the clients connected to the end of the window, divided by the clients held (origin not")
	fmt.Fprintln(w, "counted). An idle workload shows its CPU seconds in the window instead. The proto column is the clients'")
	fmt.Fprintln(w, "protocol, with the streams sharing each connection after ×; \"N conns not h2\" (or h3, http/1.1) counts")
	fmt.Fprintln(w, "connections that did not negotiate it, whose streams failed. Bytes per event is what came over the wire")
	fmt.Fprintln(w, "to the clients (after TLS and HTTP/1.1 de-chunking, before decompression) per event delivered, with the")
	fmt.Fprintln(w, "Content-Encoding the clients got when it was not identity.")
	if anyPages {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "A workload of pages (M1) counts pages, not streams: a client is a page of several members, read on one")
		fmt.Fprintln(w, "multiplexed stream (\"page: 1 stream of 10\") or on a stream per member (\"page: 10 streams\", sharing the page's")
		fmt.Fprintln(w, "connection over h2 and h3). Clients held is pages whose every stream was open, with the deliveries per page")
		fmt.Fprintln(w, "per second; a delivery is one member's event reaching a page, so CPU per 1M deliveries compares pages to pages,")
		fmt.Fprintln(w, "and RSS is per page held. Lost events are counted per member, from each member's own sequence numbers.")
	}
	return nil
}

// tableHead is the table's heading row; bench/run.sh prints it too.
const tableHead = "| workload | system | proto | clients held | p50 latency | p99 latency | max | server CPU s per 1M deliveries | RSS per client | origin connections | lost events | bytes per event |"

// printRows prints the rows of one workload and protocol, then the ratios
// of the first system to each other one.
func printRows(w io.Writer, rows []row) {
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.workloadCell(), r.systemCell(), r.protoCell(), r.heldCell(), r.latencyCell(r.p50), r.latencyCell(r.p99), r.latencyCell(r.max),
			r.cpuCell(), r.rssCell(), r.originCell(), r.lostCell(), r.wireCell())
	}
	for _, b := range rows[min(1, len(rows)):] {
		a := rows[0]
		cpu := "—"
		if !a.idle && !b.idle {
			cpu = ratio(a.serverPerM+a.originPerM, b.serverPerM+b.originPerM)
		}
		lat := func(x, y float64) string {
			if a.idle || b.idle {
				return "—"
			}
			return ratio(x, y)
		}
		fmt.Fprintf(w, "| %s | **%s ÷ %s** | %s | | | %s | %s | %s | %s | | | %s |\n",
			a.workload, a.system, b.system, a.proto, lat(a.p99, b.p99), lat(a.max, b.max), cpu, ratio(a.rssPerClient, b.rssPerClient),
			ratio(a.wirePerEvent, b.wirePerEvent))
	}
}

// summarize takes the median of each figure over rs.
func summarize(workload string, proto protoKey, system string, rs []*report) row {
	_, wanted := rs[0].held()
	r := row{workload: workload, system: system, proto: proto, rounds: len(rs), wanted: wanted, originConns: math.NaN(), pages: rs[0].Pages}
	med := func(f func(*report) float64) float64 {
		v := make([]float64, 0, len(rs))
		for _, x := range rs {
			if y := f(x); !math.IsNaN(y) {
				v = append(v, y)
			}
		}
		if len(v) == 0 {
			return math.NaN()
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	r.held = med(func(x *report) float64 { h, _ := x.held(); return float64(h) })
	if r.pages != nil {
		r.perPage = med(func(x *report) float64 {
			if x.Pages == nil {
				return math.NaN()
			}
			return x.Pages.PerPagePerSecond
		})
	}
	r.p50 = med(func(x *report) float64 { return x.Latency.P50 })
	r.p99 = med(func(x *report) float64 { return x.Latency.P99 })
	r.max = med(func(x *report) float64 { return x.Latency.Max })
	r.delivered = med(func(x *report) float64 { return float64(x.Events.Delivered) })
	r.lost = med(func(x *report) float64 { return float64(x.Events.Lost) })
	r.serverCPU = med(func(x *report) float64 { s, _, _ := x.costs(); return s.CPUSeconds })
	r.serverPerM = med(func(x *report) float64 { s, _, _ := x.costs(); return s.CPUPerMillion })
	r.originCPU = med(func(x *report) float64 { _, o, _ := x.costs(); return o.CPUSeconds })
	r.originPerM = med(func(x *report) float64 { _, o, _ := x.costs(); return o.CPUPerMillion })
	r.publisherPerM = med(func(x *report) float64 { _, _, p := x.costs(); return p.CPUPerMillion })
	r.rssPerClient = med(func(x *report) float64 { s, _, _ := x.costs(); return s.RSSPerClientKiB })
	r.wirePerEvent = med(func(x *report) float64 {
		if x.Events.WirePerEvent == 0 {
			return math.NaN() // not counted, or nothing delivered
		}
		return x.Events.WirePerEvent
	})
	for _, x := range rs {
		for enc := range x.Encodings {
			if enc != "identity" && !slices.Contains(r.encodings, enc) {
				r.encodings = append(r.encodings, enc)
			}
		}
	}
	slices.Sort(r.encodings)
	r.originConns = med(func(x *report) float64 {
		if v, ok := x.Origin["connections"].(float64); ok {
			return v
		}
		return math.NaN()
	})
	r.idle = r.delivered == 0
	for _, x := range rs {
		r.connsWrong += x.Conns.WrongProto
		r.connsFailed += x.Conns.Failed
		for _, p := range x.Procs {
			r.hasOrigin = r.hasOrigin || p.Name == "origin"
		}
		// A system without an origin stream is fed by a publisher (which
		// is not measured when there is nothing to publish).
		r.publisher = r.publisher || x.Origin == nil && !r.hasOrigin
	}
	return r
}

func (r row) workloadCell() string {
	if r.rounds == 1 {
		return r.workload
	}
	return fmt.Sprintf("%s (%d rounds)", r.workload, r.rounds)
}

// protoCell is the protocol, and the connections that did not speak it
// or could not be opened, summed over the rounds.
func (r row) protoCell() string {
	s := r.proto.String()
	if r.connsWrong > 0 {
		s += fmt.Sprintf(" (%d conns not %s)", r.connsWrong, wantALPN(r.proto.proto))
	}
	if r.connsFailed > 0 {
		s += fmt.Sprintf(" (%d conns failed)", r.connsFailed)
	}
	return s
}

func (r row) heldCell() string {
	s := fmt.Sprintf("%.0f", r.held)
	if r.held < float64(r.wanted) {
		s += fmt.Sprintf(" of %d", r.wanted)
	}
	if r.pages != nil {
		s += " pages"
		if !r.idle {
			s += fmt.Sprintf(", %.1f ev/s each", r.perPage)
		}
	}
	return s
}

// systemCell is the system, and for pages how a page reads its members.
func (r row) systemCell() string {
	switch {
	case r.pages == nil:
		return r.system
	case r.pages.Split:
		return fmt.Sprintf("%s (page: %d streams)", r.system, r.pages.Members)
	}
	return fmt.Sprintf("%s (page: 1 stream of %d)", r.system, r.pages.Members)
}

// rssCell is the RSS per client, or per page.
func (r row) rssCell() string {
	s := kib(r.rssPerClient)
	if r.pages != nil && s != "—" {
		s += " per page"
	}
	return s
}

func (r row) latencyCell(ms float64) string {
	if r.idle || math.IsNaN(ms) {
		return "—"
	}
	if ms < 10 {
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

func (r row) cpuCell() string {
	if r.idle {
		s := fmt.Sprintf("idle: %.2f s", r.serverCPU)
		if r.hasOrigin {
			s += fmt.Sprintf(" (+%.2f origin)", r.originCPU)
		}
		return s
	}
	s := fmt.Sprintf("%.1f", r.serverPerM)
	switch {
	case r.hasOrigin:
		s += fmt.Sprintf(" (+%.1f origin)", r.originPerM)
	case r.publisherPerM > 0:
		s += fmt.Sprintf(" (+%.1f publisher)", r.publisherPerM)
	}
	return s
}

func (r row) originCell() string {
	switch {
	case r.publisher:
		return "0 (publish)"
	case math.IsNaN(r.originConns):
		return "—"
	}
	return fmt.Sprintf("%.0f", r.originConns)
}

func (r row) lostCell() string {
	if r.idle {
		return "—"
	}
	return fmt.Sprintf("%.0f", r.lost)
}

// wireCell is the bytes per event, with the encodings the clients got.
func (r row) wireCell() string {
	if math.IsNaN(r.wirePerEvent) {
		return "—"
	}
	s := fmt.Sprintf("%.0f", r.wirePerEvent)
	if len(r.encodings) > 0 {
		s += " (" + strings.Join(r.encodings, ", ") + ")"
	}
	return s
}

func kib(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return fmt.Sprintf("%.1f KiB", v)
}

func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "—"
	}
	return strings.TrimSuffix(fmt.Sprintf("%.2f", a/b), ".00") + "×"
}
