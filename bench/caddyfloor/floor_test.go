package main

// Tests of sse_floor: its Caddyfile, and the events it serves.

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	var f Floor
	d := caddyfile.NewTestDispenser("sse_floor {\n rate 12.5\n size 300\n queue 8\n history 0\n}")
	if err := f.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if f.Rate != 12.5 || f.Size != 300 || f.Queue != 8 || f.History != 0 {
		t.Errorf("got %+v", f)
	}
	for _, bad := range []string{"sse_floor x", "sse_floor {\n rate\n}", "sse_floor {\n pace 1\n}", "sse_floor {\n size big\n}"} {
		if err := new(Floor).UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestServesStampedEvents(t *testing.T) {
	f := &Floor{Rate: 200, Size: 128}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	f.start()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = f.ServeHTTP(w, r, nil)
	}))
	defer srv.Close()
	defer f.Cleanup() // ends the streams, so srv.Close does not wait on them

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	// Two events of 128 bytes: "id: N", "data: N <nanos> xxx…", "".
	sc := bufio.NewScanner(resp.Body)
	for range 2 {
		var event []string
		for sc.Scan() && sc.Text() != "" {
			event = append(event, sc.Text())
		}
		if len(event) != 2 || !strings.HasPrefix(event[0], "id: ") || !strings.HasPrefix(event[1], "data: ") {
			t.Fatalf("event %q, %v", event, sc.Err())
		}
		id := strings.TrimPrefix(event[0], "id: ")
		fields := strings.Fields(strings.TrimPrefix(event[1], "data: "))
		if len(fields) != 3 || fields[0] != id {
			t.Errorf("data %q does not start with the id %s and a stamp", event[1], id)
		}
		if n := len(event[0]) + len(event[1]) + 3; n != 128 {
			t.Errorf("event of %d bytes, want 128", n)
		}
	}
}
