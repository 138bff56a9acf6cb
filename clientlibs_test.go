package ssefanout

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ldes "github.com/launchdarkly/eventsource"
	sse "github.com/tmaxmax/go-sse"
)

// Two SSE client libraries that are not ours, as peers: each reads streams
// through sse_fanout, reconnects with Last-Event-ID when the proxy cuts it,
// and agrees with our parser on a table of tricky streams.
//
// Both fire an event for every block that carries a field, data or not
// (an id-only block, a retry-only block, a type-only block), where a
// browser fires only blocks with data. That is their documented leniency,
// not ours; the tests account for it instead of comparing them with the
// spec directly.

// libEvent is what a library reports of one event.
type libEvent struct {
	Type, Data, LastEventID string
}

func (e libEvent) String() string {
	return fmt.Sprintf("type=%q data=%q lastEventId=%q", e.Type, e.Data, e.LastEventID)
}

// libPeer is one client library reading one stream.
type libPeer struct {
	events chan libEvent
	cuts   chan error // each time the library's connection ends and it will reconnect
}

// peerLibrary opens a library's reader on a URL; retry is its initial
// reconnection delay. The test's cleanup stops the reader.
type peerLibrary struct {
	name string
	open func(t *testing.T, url string, retry time.Duration) *libPeer
}

var peerLibraries = []peerLibrary{
	{"go-sse", openGoSSE},
	{"launchdarkly", openLaunchDarkly},
}

// openGoSSE reads url with github.com/tmaxmax/go-sse.
func openGoSSE(t *testing.T, url string, retry time.Duration) *libPeer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &libPeer{events: make(chan libEvent, 10000), cuts: make(chan error, 100)}
	client := &sse.Client{
		HTTPClient: httpClient,
		Backoff:    sse.Backoff{InitialInterval: retry, Multiplier: 1, Jitter: -1},
		OnRetry: func(err error, _ time.Duration) {
			select {
			case p.cuts <- err:
			default:
			}
		},
	}
	conn := client.NewConnection(req)
	conn.SubscribeToAll(func(ev sse.Event) {
		p.events <- libEvent{Type: ev.Type, Data: ev.Data, LastEventID: ev.LastEventID}
	})
	done := make(chan error, 1)
	go func() { done <- conn.Connect() }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("go-sse connection ended with %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("go-sse connection did not end")
		}
	})
	return p
}

// openLaunchDarkly reads url with github.com/launchdarkly/eventsource.
func openLaunchDarkly(t *testing.T, url string, retry time.Duration) *libPeer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &libPeer{events: make(chan libEvent, 10000), cuts: make(chan error, 100)}
	stream, err := ldes.SubscribeWithRequestAndOptions(req,
		ldes.StreamOptionHTTPClient(httpClient),
		ldes.StreamOptionInitialRetry(retry),
		ldes.StreamOptionErrorHandler(func(err error) ldes.StreamErrorHandlerResult {
			select {
			case p.cuts <- err:
			default:
			}
			return ldes.StreamErrorHandlerResult{} // retry
		}))
	if err != nil {
		t.Fatalf("launchdarkly: subscribing to %s: %v", url, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range stream.Events {
			e := libEvent{Type: ev.Event(), Data: ev.Data()}
			if l, ok := ev.(ldes.EventWithLastID); ok {
				e.LastEventID = l.LastEventID()
			}
			p.events <- e
		}
	}()
	t.Cleanup(func() {
		stream.Close()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Error("launchdarkly stream did not end")
		}
	})
	return p
}

// readUntilType collects events up to and including the first one of the
// given type.
func (p *libPeer) readUntilType(t *testing.T, typ string) []libEvent {
	t.Helper()
	return p.readUntil(t, func(e libEvent) bool { return e.Type == typ })
}

func (p *libPeer) readUntil(t *testing.T, last func(libEvent) bool) []libEvent {
	t.Helper()
	var got []libEvent
	for {
		select {
		case e := <-p.events:
			got = append(got, e)
			if last(e) {
				return got
			}
		case <-time.After(waitTimeout):
			t.Fatalf("timed out after %d events: %v", len(got), got)
		}
	}
}

// waitCut waits until the library saw its connection end.
func (p *libPeer) waitCut(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.cuts:
		return err
	case <-time.After(waitTimeout):
		t.Fatal("the library did not see its connection end")
		return nil
	}
}

// withData keeps the events that carry data, that is the ones a browser
// fires in the streams these tests send (every event there has data).
func withData(evs []libEvent) []libEvent {
	var out []libEvent
	for _, e := range evs {
		if e.Data != "" {
			out = append(out, e)
		}
	}
	return out
}

// TestClientLibrariesSeeTheOriginsStream has each library read the same
// stream from the origin directly and through the proxy: it must report the
// same events both ways.
func TestClientLibrariesSeeTheOriginsStream(t *testing.T) {
	origin := newTestOrigin(t)
	probe := newProbe(t, t.Name())
	base := startCaddy(t, fmt.Sprintf("route {\n\t\tsse_probe %s\n\t\tsse_fanout %s\n\t}", t.Name(), origin.URL()))
	for _, lib := range peerLibraries {
		t.Run(lib.name, func(t *testing.T) {
			path := "/same/" + lib.name
			read := func(url string) []libEvent {
				p := lib.open(t, url, time.Second)
				up := origin.nextConn(t)
				sendScript(up, 20)
				up.send("event: end\ndata: end\n\n")
				return p.readUntilType(t, "end")
			}
			fromOrigin := read(origin.URL() + path)
			before := countAnswered(probe.requests(), http.StatusOK)
			fromProxy := read(base + path)
			if n := countAnswered(probe.requests(), http.StatusOK); n != before+1 {
				t.Fatalf("the proxy answered %d requests, want 1", n-before)
			}
			if !slices.Equal(fromProxy, fromOrigin) {
				t.Errorf("through the proxy:\n%s\nfrom the origin:\n%s", fmtLibEvents(fromProxy), fmtLibEvents(fromOrigin))
			}
			if n := len(withData(fromOrigin)); n < 20 {
				t.Errorf("only %d events with data", n)
			}
		})
	}
}

// TestClientLibrariesResumeAfterTheProxyCutsThem cuts each library with a
// config reload: it must reconnect by itself, with Last-Event-ID, and get
// what it missed from the proxy's buffer, with no gap and no duplicate.
func TestClientLibrariesResumeAfterTheProxyCutsThem(t *testing.T) {
	origin := newTestOrigin(t)
	probe := newProbe(t, t.Name())
	port := freePort(t)
	site := func(heartbeat string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\troute {\n\t\tsse_probe %s\n\t\tsse_fanout %s {\n\t\t\tretry 300ms\n\t\t\theartbeat %s\n\t\t}\n\t}\n}\n",
			port, t.Name(), origin.URL(), heartbeat)
	}
	startCaddyfile(t, site("1m"))
	reloads := 0
	for _, lib := range peerLibraries {
		t.Run(lib.name, func(t *testing.T) {
			path := "/cut/" + lib.name
			requests := func() []probeRequest {
				var out []probeRequest
				for _, r := range probe.requests() {
					if r.URI == path && r.Status == http.StatusOK {
						out = append(out, r)
					}
				}
				return out
			}
			p := lib.open(t, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), time.Second)
			up := origin.nextConn(t)
			sendIDs(up, 1, 10)
			got := p.readUntil(t, func(e libEvent) bool { return e.Data == "event 10" })

			reloads++ // a compatible config: same upstream, same streams and buffers
			loadCaddyfile(t, testGlobalOptions()+site(strconv.Itoa(reloads)+"m"))
			t.Logf("cut: %v", p.waitCut(t))
			sendIDs(up, 11, 15) // while the library waits to reconnect: into the buffer
			probe.waitFor(t, "the reconnect", func([]probeRequest) bool { return len(requests()) >= 2 })
			if id := requests()[1].Header.Get("Last-Event-ID"); id != "10" {
				t.Errorf("reconnected with Last-Event-ID %q, want 10", id)
			}
			sendIDs(up, 16, 20)
			got = append(got, p.readUntil(t, func(e libEvent) bool { return e.Data == "event 20" })...)

			var ids []int
			for _, e := range withData(got) {
				n, err := strconv.Atoi(e.LastEventID)
				if err != nil || e.Data != "event "+e.LastEventID {
					t.Fatalf("unexpected event %s", e)
				}
				ids = append(ids, n)
			}
			if !slices.Equal(ids, seq(1, 20)) {
				t.Errorf("the library saw ids %v, want 1..20 once each", ids)
			}
			if n := len(requests()); n != 2 {
				t.Errorf("the library made %d requests, want 2", n)
			}
		})
	}
	if n := origin.total.Load(); n != int64(len(peerLibraries)) {
		t.Errorf("the origin saw %d requests, want one per stream", n)
	}
}

func fmtLibEvents(evs []libEvent) string {
	var b strings.Builder
	for i, e := range evs {
		fmt.Fprintf(&b, "  %3d %s\n", i, e)
	}
	return b.String()
}
