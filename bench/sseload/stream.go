package main

import (
	"bytes"
	"errors"
	"io"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// This file is the client side of a stream: a minimal event-stream reader
// that knows the sseorigin data format, and the latency histogram.

var (
	errLineTooLong = errors.New("line longer than 1 MiB")
	dataField      = []byte("data:")
)

// read parses the event stream in body until it ends, counting c's events.
// It is minimal: lines end in LF or CRLF (not CR alone), and of each event
// only the first data line is read, for its sequence number and stamp. On
// a page's multiplexed stream (-members), the event and id lines are read
// too, for the event's member (page.go).
func (l *load) read(body io.Reader, c *client) error {
	buf := make([]byte, 2048)
	var (
		start, end int
		readErr    error
		seq        uint64
		stamp      int64
		have       bool // the current block has a data line

		mux       = c.lasts != nil
		typed     bool // the current block has an event line
		byType    = -1 // the member its event type names
		byNchanID = -1 // the member its nchan multiplexed id names
	)
	for {
		i := bytes.IndexByte(buf[start:end], '\n')
		if i < 0 {
			if readErr != nil {
				return readErr
			}
			if start > 0 {
				end = copy(buf, buf[start:end])
				start = 0
			}
			if end == len(buf) {
				if len(buf) >= 1<<20 {
					return errLineTooLong
				}
				buf = append(buf, make([]byte, len(buf))...)
			}
			var n int
			n, readErr = body.Read(buf[end:])
			end += n
			continue
		}
		line := buf[start : start+i]
		start += i + 1
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			switch {
			case have && mux:
				m := byNchanID
				if typed {
					m = byType
				}
				l.memberEvent(c, m, seq, stamp)
			case have:
				l.event(c, seq, stamp, &c.last)
			}
			have, typed, byType, byNchanID = false, false, -1, -1
			continue
		}
		if line[0] == ':' {
			if l.measuring.Load() {
				l.comments.Add(1)
			}
			continue
		}
		if !have && bytes.HasPrefix(line, dataField) {
			seq, stamp, have = parseData(line[len(dataField):])
			if !have {
				l.foreign.Add(1)
			}
			continue
		}
		if mux {
			if v, ok := bytes.CutPrefix(line, eventField); ok {
				typed, byType = true, memberOfType(v, l.members)
			} else if v, ok := bytes.CutPrefix(line, idField); ok {
				byNchanID = memberOfNchanID(v, len(l.cfg.members))
			}
		}
	}
}

// parseData reads "seq nanos" at the start of a data value.
func parseData(v []byte) (seq uint64, stamp int64, ok bool) {
	if len(v) > 0 && v[0] == ' ' {
		v = v[1:]
	}
	seq, v, ok = parseUint(v)
	if !ok || len(v) == 0 || v[0] != ' ' {
		return 0, 0, false
	}
	n, v, ok := parseUint(v[1:])
	if !ok || (len(v) > 0 && v[0] != ' ') || n > math.MaxInt64 {
		return 0, 0, false
	}
	return seq, int64(n), true
}

// parseUint reads leading decimal digits.
func parseUint(v []byte) (uint64, []byte, bool) {
	var n uint64
	i := 0
	for ; i < len(v) && v[i] >= '0' && v[i] <= '9' && i < 19; i++ {
		n = n*10 + uint64(v[i]-'0')
	}
	return n, v[i:], i > 0
}

// event records one event received by c.
func (l *load) event(c *client, seq uint64, stamp int64, last *uint64) {
	l.events.Add(1)
	if l.measuring.Load() {
		l.hist.record(time.Now().UnixNano() - stamp)
		c.delivered.Add(1)
		switch {
		case *last == 0 || seq == *last+1:
		case seq > *last+1:
			c.lost.Add(seq - *last - 1)
		default:
			c.dup.Add(1)
		}
	}
	if seq > *last {
		*last = seq
	}
}

// histogram counts latencies in microseconds, exactly below 1024 µs and
// in 512 buckets per power of two above (0.2% resolution), up to 2^40 µs.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64 // nanoseconds
	sum    atomic.Int64 // nanoseconds
}

const (
	histSubBits = 9
	histLinear  = 2 << histSubBits // values below this have a bucket each
	histBuckets = histLinear + (40-histSubBits-1)*(1<<histSubBits)
)

func histIndex(us uint64) int {
	if us < histLinear {
		return int(us)
	}
	shift := bits.Len64(us) - histSubBits - 1
	i := histLinear + (shift-1)<<histSubBits + int(us>>shift) - 1<<histSubBits
	return min(i, histBuckets-1)
}

// histValue is the lower bound, in µs, of bucket i.
func histValue(i int) uint64 {
	if i < histLinear {
		return uint64(i)
	}
	shift := (i-histLinear)>>histSubBits + 1
	m := uint64((i-histLinear)&(1<<histSubBits-1) + 1<<histSubBits)
	return m << shift
}

func (h *histogram) record(ns int64) {
	ns = max(ns, 0)
	h.counts[histIndex(uint64(ns/1000))].Add(1)
	h.sum.Add(ns)
	for m := h.max.Load(); ns > m && !h.max.CompareAndSwap(m, ns); m = h.max.Load() {
	}
}

// latencySummary is the histogram in milliseconds.
type latencySummary struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

func (h *histogram) summary() latencySummary {
	var counts [histBuckets]uint64
	var total uint64
	for i := range counts {
		counts[i] = h.counts[i].Load()
		total += counts[i]
	}
	s := latencySummary{Count: total, Max: float64(h.max.Load()) / 1e6}
	if total == 0 {
		return s
	}
	s.Mean = float64(h.sum.Load()) / float64(total) / 1e6
	quantile := func(q float64) float64 {
		rank := uint64(math.Ceil(q * float64(total)))
		var seen uint64
		for i, n := range counts {
			seen += n
			if seen >= rank {
				return min(float64(histValue(i))/1e3, s.Max)
			}
		}
		return s.Max
	}
	s.P50, s.P90, s.P99, s.P999 = quantile(0.50), quantile(0.90), quantile(0.99), quantile(0.999)
	return s
}

// sparse is the histogram's non-empty buckets as [bucket, count] pairs.
func (h *histogram) sparse() [][2]uint64 {
	var out [][2]uint64
	for i := range h.counts {
		if n := h.counts[i].Load(); n > 0 {
			out = append(out, [2]uint64{uint64(i), n})
		}
	}
	return out
}

// add adds the buckets of sparse, with their sum and max, to h.
func (h *histogram) add(sparse [][2]uint64, sumNs, maxNs int64) {
	for _, p := range sparse {
		if p[0] < histBuckets {
			h.counts[p[0]].Add(p[1])
		}
	}
	h.sum.Add(sumNs)
	for m := h.max.Load(); maxNs > m && !h.max.CompareAndSwap(m, maxNs); m = h.max.Load() {
	}
}
