package main

// This file is -streams: the origin as several streams, named s0, s1, …,
// each with its own ids and its own events at -rate, for the bench's pages
// (bench/run.sh's workload M1), whose members are ten streams. One clock
// ticks -streams times per interval and the ticks go to the streams in
// turn, so that the streams' events are spread evenly over each interval
// rather than sent all at once: stream k's event n is due at
// (n-1)·interval + (k+1)·interval/streams.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sseorigin"
)

// streamPlaceholder is replaced by a stream's name in -publish's URL.
const streamPlaceholder = "{stream}"

// maxStreams bounds -streams.
const maxStreams = 1000

// streamName is the name of stream k: s0, s1, …
func streamName(k int) string { return "s" + strconv.Itoa(k) }

// tickStream is the stream and that stream's sequence number of the
// clock's tick-th tick (from 1) over n streams.
func tickStream(tick uint64, n int) (stream int, seq uint64) {
	return int((tick - 1) % uint64(n)), (tick-1)/uint64(n) + 1
}

// streamIndex is the stream that path asks for: its last segment names
// it, "s3" in /events/s3, with no leading zero; ok is false for any other
// path, or a stream past n.
func streamIndex(path string, n int) (k int, ok bool) {
	name := path[strings.LastIndexByte(path, '/')+1:]
	digits, found := strings.CutPrefix(name, "s")
	if !found || digits == "" || len(digits) > 4 || (digits[0] == '0' && len(digits) > 1) {
		return 0, false
	}
	for _, d := range digits {
		if d < '0' || d > '9' {
			return 0, false
		}
	}
	k, _ = strconv.Atoi(digits)
	return k, k < n
}

// streamSet serves -streams streams, each an sseorigin.Origin of its own,
// on every path whose last segment names one, and the sum of their
// counters on /stats.
type streamSet []*sseorigin.Origin

func (s streamSet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/stats" {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var sum sseorigin.Stats
		for _, o := range s {
			st := o.Stats()
			sum.Connections += st.Connections
			sum.ConnectionsTotal += st.ConnectionsTotal
			sum.Dropped += st.Dropped
			sum.Events += st.Events
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		_ = json.NewEncoder(w).Encode(sum)
		return
	}
	k, ok := streamIndex(r.URL.Path, len(s))
	if !ok {
		http.Error(w, fmt.Sprintf("no such stream: the paths end in one of s0 to s%d", len(s)-1), http.StatusNotFound)
		return
	}
	s[k].ServeHTTP(w, r)
}

// Close closes every stream's origin.
func (s streamSet) Close() {
	for _, o := range s {
		o.Close()
	}
}

// publishTargets is -publish's URL for each of n streams: the URL with
// {stream} replaced by the stream's name, which n > 1 needs. All must be
// on one host, as they share the publisher's connection.
func publishTargets(target string, n int) ([]*url.URL, error) {
	if n > 1 && !strings.Contains(target, streamPlaceholder) {
		return nil, fmt.Errorf("-publish with -streams %d needs %s in the URL, for each stream's name", n, streamPlaceholder)
	}
	out := make([]*url.URL, n)
	for k := range out {
		raw := strings.ReplaceAll(target, streamPlaceholder, streamName(k))
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return nil, fmt.Errorf("-publish needs an http:// URL, got %q", raw)
		}
		if k > 0 && u.Host != out[0].Host {
			return nil, fmt.Errorf("-publish: %s puts streams on different hosts", target)
		}
		out[k] = u
	}
	return out, nil
}
