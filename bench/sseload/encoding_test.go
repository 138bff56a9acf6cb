package main

// Tests of -accept-encoding: compressed streams are decoded, and their
// bytes on the wire counted.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// flushingWriter is a compressor per response, flushed with it, as
// Caddy's encode handler runs one.
type flushingWriter struct {
	http.ResponseWriter
	enc interface {
		io.Writer
		Flush() error
	}
}

func (w *flushingWriter) Write(b []byte) (int, error) { return w.enc.Write(b) }

func (w *flushingWriter) Flush() {
	w.enc.Flush()
	http.NewResponseController(w.ResponseWriter).Flush()
}

// compressing serves h's responses in the encoding the request accepts,
// gzip or zstd, if any.
func compressing(t *testing.T, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch enc := r.Header.Get("Accept-Encoding"); enc {
		case "gzip":
			zw := gzip.NewWriter(w)
			defer zw.Close()
			w.Header().Set("Content-Encoding", enc)
			w = &flushingWriter{w, zw}
		case "zstd":
			zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
			if err != nil {
				t.Error(err)
				return
			}
			defer zw.Close()
			w.Header().Set("Content-Encoding", enc)
			w = &flushingWriter{w, zw}
		}
		h.ServeHTTP(w, r)
	})
}

func TestAcceptEncodingDecodesAndCountsTheWire(t *testing.T) {
	s := &seen{protos: make(map[string]int)}
	srv := httptest.NewServer(compressing(t, eventOrigin(t, s)))
	t.Cleanup(srv.Close)
	perEvent := make(map[string]float64)
	for _, accept := range []string{"", "gzip", "zstd"} {
		cfg := &config{
			url: srv.URL + "/events", clients: 3, ramp: 1000, proto: protoH1, streamsPerConn: 1,
			acceptEncoding: accept, duration: 300 * time.Millisecond, connectTimeout: 5 * time.Second,
		}
		if err := cfg.check(); err != nil {
			t.Fatal(err)
		}
		rep, err := run(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		checkDelivered(t, rep)
		want := accept
		if want == "" {
			want = "identity"
		}
		if rep.Encodings[want] != 3 || len(rep.Encodings) != 1 {
			t.Errorf("Accept-Encoding %q: responses by encoding %v, want 3 in %s", accept, rep.Encodings, want)
		}
		if rep.Events.WireBytes == 0 || rep.Events.WirePerEvent != float64(rep.Events.WireBytes)/float64(rep.Events.Delivered) {
			t.Errorf("Accept-Encoding %q: %d wire bytes, %.1f per event for %d events", accept, rep.Events.WireBytes, rep.Events.WirePerEvent, rep.Events.Delivered)
		}
		perEvent[want] = rep.Events.WirePerEvent
		var b strings.Builder
		rep.writeText(&b)
		if !strings.Contains(b.String(), "per event; "+want+" ×3") {
			t.Errorf("the text report lacks the wire line:\n%s", b.String())
		}
	}
	// The events are 128 bytes, mostly padding.
	if perEvent["identity"] != 128 || perEvent["gzip"] > 64 || perEvent["zstd"] > 64 {
		t.Errorf("bytes per event: %v, want 128 plain, and less than half that compressed", perEvent)
	}
}

func TestConfigRejectsALineEndInAcceptEncoding(t *testing.T) {
	cfg := &config{url: "http://127.0.0.1:1/", clients: 1, ramp: 1, proto: protoH1, streamsPerConn: 1, duration: time.Second,
		acceptEncoding: "gzip\r\nX-Evil: 1"}
	if err := cfg.check(); err == nil || !strings.Contains(err.Error(), "line end") {
		t.Fatalf("got %v, want the line-end error", err)
	}
}

func TestTableShowsBytesPerEvent(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for _, r := range []struct {
		sys  string
		wire float64
		enc  map[string]int64
	}{
		{"sse_fanout_gzip", 350, map[string]int64{"gzip": 10}},
		{"encode_gzip", 300, map[string]int64{"gzip": 10}},
		{"old", 0, nil}, // a report from before bytes were counted
	} {
		rep := report{Labels: labels{Workload: "W1", System: r.sys, Round: 1}, Encodings: r.enc}
		rep.Clients.Wanted, rep.Clients.Held, rep.Events.Delivered, rep.Events.WirePerEvent = 10, 10, 100, r.wire
		files = append(files, writeReport(t, dir, r.sys+".json", rep))
	}
	var b strings.Builder
	if err := printTable(&b, files, "sse_fanout_gzip encode_gzip old"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| lost events | bytes per event |",
		"| 0 | 350 (gzip) |",
		"| 0 | 300 (gzip) |",
		"| 0 | — |",
		"| **sse_fanout_gzip ÷ encode_gzip** | h1 | | | — | — | — | — | | | 1.17× |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// writeReport writes r as JSON into dir and returns the file's name.
func writeReport(t *testing.T, dir, name string, r report) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}
