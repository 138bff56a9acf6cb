package main

// Tests of -streams: the ticks spread over the streams, the paths that
// name a stream, the publisher's URLs, and a served and a published run of
// three streams, each with ids of its own.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sseorigin"
)

func TestTickStream(t *testing.T) {
	for _, tc := range []struct {
		tick   uint64
		n      int
		stream int
		seq    uint64
	}{
		{1, 1, 0, 1},
		{7, 1, 0, 7},
		{1, 10, 0, 1},
		{10, 10, 9, 1},
		{11, 10, 0, 2},
		{25, 10, 4, 3},
		{6, 3, 2, 2},
	} {
		if s, q := tickStream(tc.tick, tc.n); s != tc.stream || q != tc.seq {
			t.Errorf("tick %d of %d streams: stream %d seq %d, want %d %d", tc.tick, tc.n, s, q, tc.stream, tc.seq)
		}
	}
}

func TestStreamIndex(t *testing.T) {
	for _, tc := range []struct {
		path string
		k    int
		ok   bool
	}{
		{"/events/s0", 0, true},
		{"/events/s9", 9, true},
		{"/s3", 3, true},
		{"/a/b/s7", 7, true},
		{"/a/b/s12", 0, false},     // past 10 streams
		{"/events/s10", 10, false}, // past 10 streams
		{"/events/s01", 0, false},  // a leading zero
		{"/events/s", 0, false},
		{"/events/x1", 0, false},
		{"/events/s1x", 0, false},
		{"/events/s1/", 0, false},
		{"/events", 0, false},
		{"/", 0, false},
		{"/events/s-1", 0, false},
		{"/events/s99999", 0, false},
	} {
		if k, ok := streamIndex(tc.path, 10); ok != tc.ok || (ok && k != tc.k) {
			t.Errorf("%s: %d %v, want %d %v", tc.path, k, ok, tc.k, tc.ok)
		}
	}
}

func TestPublishTargets(t *testing.T) {
	us, err := publishTargets("http://127.0.0.1:1/pub/{stream}", 3)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range us {
		got = append(got, u.String())
	}
	if want := "http://127.0.0.1:1/pub/s0 http://127.0.0.1:1/pub/s1 http://127.0.0.1:1/pub/s2"; strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
	if us, err := publishTargets("http://127.0.0.1:1/pub", 1); err != nil || us[0].Path != "/pub" {
		t.Errorf("one stream: %v, %v", us, err)
	}
	for _, bad := range []string{
		"http://127.0.0.1:1/pub",           // no {stream} for several
		"https://127.0.0.1:1/pub/{stream}", // not http
		"http://127.0.0.{stream}:1/pub",    // a host per stream
		"http:///pub/{stream}",             // no host
	} {
		if _, err := publishTargets(bad, 3); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// readEvents reads n events' id and data lines from an event stream.
func readEvents(t *testing.T, body io.Reader, n int) (ids, data []string) {
	t.Helper()
	sc := bufio.NewScanner(body)
	for len(data) < n && sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			ids = append(ids, v)
		}
		if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			data = append(data, v)
		}
	}
	if len(data) < n {
		t.Fatalf("read %d events, want %d: %v", len(data), n, sc.Err())
	}
	return ids, data
}

func TestServeStreams(t *testing.T) {
	l, err := listen("127.0.0.1:0", "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + l.tcp.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() {
		c := clock{rate: 20, interval: 50 * time.Millisecond, size: 128, streams: 3}
		served <- c.serve(ctx, l, sseorigin.Options{Queue: 16})
	}()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	var bodies []io.ReadCloser
	for _, path := range []string{"/events/s0", "/x/s2"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", path, resp.Status)
		}
		bodies = append(bodies, resp.Body)
	}
	stats, err := http.Get(base + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st sseorigin.Stats
	if err := json.NewDecoder(stats.Body).Decode(&st); err != nil || st.Connections != 2 {
		t.Errorf("stats %+v, %v: want the 2 streams' connections summed", st, err)
	}
	stats.Body.Close()
	// Each stream's ids go on from its own last one.
	for i, body := range bodies {
		ids, data := readEvents(t, body, 3)
		first, _ := strconv.Atoi(ids[0])
		for j := range ids {
			if ids[j] != strconv.Itoa(first+j) || !strings.HasPrefix(data[j], ids[j]+" ") {
				t.Errorf("stream %d: ids %v, data %.30q: want its own ids counting up by one, each in its data", i, ids, data)
			}
		}
		body.Close()
	}
	for _, path := range []string{"/events/s3", "/events", "/events/s01"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %s, want 404", path, resp.Status)
		}
	}
}

func TestPublishStreams(t *testing.T) {
	var mu sync.Mutex
	got := make(map[string][]string) // path: bodies, in order
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.URL.Path] = append(got[r.URL.Path], string(b))
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		c := clock{rate: 50, interval: 20 * time.Millisecond, size: 100, streams: 3}
		done <- c.publish(ctx, srv.URL+"/pub/{stream}")
	}()
	enough := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range []string{"/pub/s0", "/pub/s1", "/pub/s2"} {
			if len(got[p]) < 3 {
				return false
			}
		}
		return true
	}
	for !enough() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("publish: %v", err) // nil once ctx has ended
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Errorf("published to %d paths, want 3: %v", len(got), got)
	}
	for p, bodies := range got {
		for i, b := range bodies[:min(3, len(bodies))] {
			seq, _, _ := strings.Cut(b, " ")
			if want := []string{"1", "2", "3"}[i]; seq != want {
				t.Errorf("%s: event %d is %.30q, want sequence number %s", p, i, b, want)
			}
		}
	}
}
