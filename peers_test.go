package ssefanout

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"
)

// goSSEReader reads a stream with github.com/tmaxmax/go-sse, an SSE client
// library that is not ours.
type goSSEReader struct {
	events chan sse.Event
	cancel context.CancelFunc
	done   chan error
}

func newGoSSEReader(t *testing.T, url string) *goSSEReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &sse.Client{HTTPClient: httpClient, Backoff: sse.Backoff{MaxRetries: -1}}
	conn := client.NewConnection(req)
	r := &goSSEReader{events: make(chan sse.Event, 10000), cancel: cancel, done: make(chan error, 1)}
	conn.SubscribeToAll(func(ev sse.Event) { r.events <- ev })
	go func() { r.done <- conn.Connect() }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("go-sse connection ended with %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("go-sse connection did not end")
		}
	})
	return r
}

// readUntil collects events until one with the given data.
func (r *goSSEReader) readUntil(t *testing.T, lastData string) []sse.Event {
	t.Helper()
	var got []sse.Event
	for {
		select {
		case ev := <-r.events:
			got = append(got, ev)
			if ev.Data == lastData {
				return got
			}
		case <-time.After(waitTimeout):
			t.Fatalf("go-sse: no event with data %q after %d events", lastData, len(got))
		}
	}
}

// TestGoSSEClientSeesTheOriginsStream has go-sse read the same stream from
// the origin directly and through the proxy: it must see the same events.
func TestGoSSEClientSeesTheOriginsStream(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())

	direct := newGoSSEReader(t, origin.URL()+"/peer")
	directUp := origin.nextConn(t)
	proxied := newGoSSEReader(t, base+"/peer")
	proxiedUp := origin.nextConn(t)
	sendScript(directUp, 20)
	sendScript(proxiedUp, 20)

	fromOrigin := direct.readUntil(t, "event 20")
	fromProxy := proxied.readUntil(t, "event 20")
	if !slices.Equal(fromOrigin, fromProxy) {
		t.Fatalf("go-sse saw different events\nfrom the origin: %+v\nthrough the proxy: %+v", fromOrigin, fromProxy)
	}
	if len(fromOrigin) < 20 {
		t.Fatalf("go-sse saw only %d events", len(fromOrigin))
	}
}
