package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"

	ldes "github.com/launchdarkly/eventsource"
	gosse "github.com/tmaxmax/go-sse"
)

// The two client libraries the tests use as peers (go-sse and
// launchdarkly/eventsource), opened the same way, and what the tests read
// of them; clientlibs_test.go has the tests.

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
	client := &gosse.Client{
		HTTPClient: testkit.HTTPClient,
		Backoff:    gosse.Backoff{InitialInterval: retry, Multiplier: 1, Jitter: -1},
		OnRetry: func(err error, _ time.Duration) {
			select {
			case p.cuts <- err:
			default:
			}
		},
	}
	conn := client.NewConnection(req)
	conn.SubscribeToAll(func(ev gosse.Event) {
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
		case <-time.After(testkit.WaitTimeout):
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
		ldes.StreamOptionHTTPClient(testkit.HTTPClient),
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
		case <-time.After(testkit.WaitTimeout):
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
		case <-time.After(testkit.WaitTimeout):
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
	case <-time.After(testkit.WaitTimeout):
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

func fmtLibEvents(evs []libEvent) string {
	var b strings.Builder
	for i, e := range evs {
		fmt.Fprintf(&b, "  %3d %s\n", i, e)
	}
	return b.String()
}
