package sseorigin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// startOrigin serves a new Origin on 127.0.0.1. The test's cleanup closes
// the origin, which ends its streams, then the server, which waits for
// every handler to return.
func startOrigin(t *testing.T, opts Options) (*Origin, *httptest.Server) {
	t.Helper()
	o := New(opts)
	srv := httptest.NewServer(o)
	t.Cleanup(func() {
		o.Close()
		srv.Close()
	})
	return o, srv
}

// request sends a request to srv, bounded in time so that a missing event
// fails the test instead of hanging it. The test's cleanup closes the body.
func request(t *testing.T, srv *httptest.Server, method, path string, header http.Header) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if header != nil {
		req.Header = header.Clone()
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// openStream opens the event stream on path. When it returns the origin
// has registered the connection, so every event published after it
// reaches the stream.
func openStream(t *testing.T, srv *httptest.Server, path string, header http.Header) *bufio.Reader {
	t.Helper()
	resp := request(t, srv, http.MethodGet, path, header)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %s, Content-Type %q", path, resp.Status, resp.Header.Get("Content-Type"))
	}
	return bufio.NewReader(resp.Body)
}

// readBlock reads the stream up to the next blank line, and returns the
// lines before it joined by newlines.
func readBlock(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream after %q: %v", lines, err)
		}
		if line == "\n" {
			return strings.Join(lines, "\n")
		}
		lines = append(lines, strings.TrimSuffix(line, "\n"))
	}
}

// readIDs reads events until the one with id last, and returns their ids.
func readIDs(t *testing.T, br *bufio.Reader, last string) []string {
	t.Helper()
	var ids []string
	for len(ids) < 100 {
		id, _, _ := strings.Cut(strings.TrimPrefix(readBlock(t, br), "id: "), "\n")
		ids = append(ids, id)
		if id == last {
			return ids
		}
	}
	t.Fatalf("no event %s in the first 100: %v", last, ids)
	return nil
}

func TestServeLastEventID(t *testing.T) {
	for _, tc := range []struct {
		name, lastID string
		want         []string // ids received, up to the live event 6
	}{
		{"none", "", []string{"6"}},
		{"in the history", "3", []string{"4", "5", "6"}},
		{"older than the history", "1", []string{"3", "4", "5", "6"}},
		{"the newest", "5", []string{"6"}},
		{"not a number", "x", []string{"6"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, srv := startOrigin(t, Options{Queue: 16, History: 3})
			for seq := uint64(1); seq <= 5; seq++ {
				o.Publish(NewStamped(seq, time.Now(), 64))
			}
			header := http.Header{}
			if tc.lastID != "" {
				header.Set("Last-Event-ID", tc.lastID)
			}
			br := openStream(t, srv, "/events", header)
			o.Publish(NewStamped(6, time.Now(), 64))
			if got := readIDs(t, br, "6"); !slices.Equal(got, tc.want) {
				t.Errorf("got ids %v, want %v", got, tc.want)
			}
		})
	}
}

func TestServePreambleAndStream(t *testing.T) {
	o, srv := startOrigin(t, Options{Path: "/events", Preamble: ": hello\n\n"})
	br := openStream(t, srv, "/events/room?x=1", nil)
	o.Publish(streamEvent{seq: 1})
	if got := readBlock(t, br); got != ": hello" {
		t.Errorf("the stream starts with %q, want the preamble", got)
	}
	if got, want := readBlock(t, br), "data: /events/room?x=1"; got != want {
		t.Errorf("the event is %q, want %q", got, want)
	}
}

func TestServeRouting(t *testing.T) {
	for _, tc := range []struct {
		path, method, reqPath string
		status                int
		contentType           string
	}{
		{"/events", "GET", "/events", 200, "text/event-stream"},
		{"/events", "GET", "/events/a/b?c", 200, "text/event-stream"},
		{"/events", "GET", "/eventsx", 404, "text/plain; charset=utf-8"},
		{"/events", "GET", "/", 404, "text/plain; charset=utf-8"},
		{"/events", "POST", "/events", 405, "text/plain; charset=utf-8"},
		{"/events", "GET", "/stats", 200, "application/json"},
		{"/events", "POST", "/stats", 405, "text/plain; charset=utf-8"},
		{"", "GET", "/", 200, "text/event-stream"},
		{"", "GET", "/anything?x", 200, "text/event-stream"},
		{"", "GET", "/stats", 200, "application/json"},
		{"", "PUT", "/x", 405, "text/plain; charset=utf-8"},
	} {
		t.Run(tc.path+" "+tc.method+" "+tc.reqPath, func(t *testing.T) {
			_, srv := startOrigin(t, Options{Path: tc.path})
			resp := request(t, srv, tc.method, tc.reqPath, nil)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.contentType {
				t.Errorf("got %s, Content-Type %q; want %d, %q",
					resp.Status, resp.Header.Get("Content-Type"), tc.status, tc.contentType)
			}
			if tc.status == 405 && resp.Header.Get("Allow") != "GET" {
				t.Errorf("Allow is %q, want GET", resp.Header.Get("Allow"))
			}
		})
	}
}

func TestServeStats(t *testing.T) {
	o, srv := startOrigin(t, Options{Queue: 16})
	streams := []*bufio.Reader{openStream(t, srv, "/a", nil), openStream(t, srv, "/b", nil)}
	for seq := uint64(1); seq <= 3; seq++ {
		o.Publish(NewStamped(seq, time.Now(), 0))
	}
	for _, br := range streams {
		readIDs(t, br, "3")
	}

	resp := request(t, srv, http.MethodGet, "/stats", nil)
	var got map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"connections": 2.0, "connections_total": 2.0, "dropped": 0.0, "events": 3.0}
	if !maps.Equal(got, want) {
		t.Errorf("/stats is %v, want %v", got, want)
	}

	o.Close()
	for _, br := range streams {
		if _, err := br.ReadString('\n'); !errors.Is(err, io.EOF) {
			t.Errorf("after Close, reading a stream gave %v, want EOF", err)
		}
	}
	srv.Close() // waits for the handlers
	if got, want := o.Stats(), (Stats{ConnectionsTotal: 2, Events: 3}); got != want {
		t.Errorf("after Close, stats are %+v, want %+v", got, want)
	}
}

func TestServeClose(t *testing.T) {
	o, srv := startOrigin(t, Options{})
	br := openStream(t, srv, "/", nil)
	o.Publish(NewStamped(1, time.Now(), 0))
	o.Close()
	readIDs(t, br, "1") // what was queued still goes out
	if _, err := br.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Errorf("after Close, reading the stream gave %v, want EOF", err)
	}
	if resp := request(t, srv, http.MethodGet, "/", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a stream opened after Close got %s, want 503", resp.Status)
	}
}
