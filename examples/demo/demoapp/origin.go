package demoapp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Origin is the demo's event source: a plain Server-Sent Events endpoint
// that knows nothing about fan-out, like the application sse_fanout is put
// in front of. It serves the event stream on /events and every path below
// it, and its connection counts as JSON on /stats.
//
// One clock drives every connection, so all of them see the same events:
// an unnamed message event every MessageEvery, with an id that counts up
// across reconnects and a JSON payload carrying the send time, and an
// event named tick, without an id, every TickEvery. It keeps no history:
// a new connection starts with the next event, whatever its Last-Event-ID.
//
// The message payload also reports how many event-stream connections the
// origin has open, which is the number sse_fanout keeps at one per stream
// however many browsers are watching.
type Origin struct {
	conns atomic.Int64 // event-stream connections open now
	total atomic.Int64 // event-stream connections served since the start

	mu     sync.Mutex
	subs   map[chan originEvent]struct{} // one per open connection
	closed bool

	done chan struct{} // closed by Close
	once sync.Once
	wg   sync.WaitGroup // the clock
}

// originEvent is one event of the shared clock, before it is encoded for a
// connection.
type originEvent struct {
	tick   bool  // a named tick event, rather than an unnamed message
	n      int64 // the message id, or the tick count
	sentMs int64 // when the clock fired, in Unix milliseconds
}

// originQueue is how many events a connection may fall behind before the
// origin drops it.
const originQueue = 64

// NewOrigin starts an origin that sends a message every messageEvery and a
// tick every tickEvery. Close stops it.
func NewOrigin(messageEvery, tickEvery time.Duration) *Origin {
	o := &Origin{
		subs: make(map[chan originEvent]struct{}),
		done: make(chan struct{}),
	}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		o.runClock(messageEvery, tickEvery)
	}()
	return o
}

// Close stops the clock and ends every open event stream. It waits for the
// clock, not for the connections' handlers, which return on their own.
func (o *Origin) Close() {
	o.once.Do(func() {
		close(o.done)
		o.mu.Lock()
		o.closed = true
		for ch := range o.subs {
			delete(o.subs, ch)
			close(ch)
		}
		o.mu.Unlock()
	})
	o.wg.Wait()
}

// Connections returns how many event-stream connections are open now.
func (o *Origin) Connections() int64 { return o.conns.Load() }

// runClock publishes the message and tick events until Close.
func (o *Origin) runClock(messageEvery, tickEvery time.Duration) {
	messages := time.NewTicker(messageEvery)
	defer messages.Stop()
	ticks := time.NewTicker(tickEvery)
	defer ticks.Stop()
	var lastID, tickCount int64
	for {
		select {
		case <-o.done:
			return
		case t := <-messages.C:
			lastID++
			o.publish(originEvent{n: lastID, sentMs: t.UnixMilli()})
		case t := <-ticks.C:
			tickCount++
			o.publish(originEvent{tick: true, n: tickCount, sentMs: t.UnixMilli()})
		}
	}
}

// publish hands ev to every connection. A connection whose queue is full is
// dropped, so that no connection holds up the others.
func (o *Origin) publish(ev originEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for ch := range o.subs {
		select {
		case ch <- ev:
		default:
			delete(o.subs, ch)
			close(ch)
		}
	}
}

// subscribe registers a connection. It returns nil after Close.
func (o *Origin) subscribe() chan originEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	ch := make(chan originEvent, originQueue)
	o.subs[ch] = struct{}{}
	return ch
}

// unsubscribe removes a connection that is leaving. The channel is closed
// only by whoever removes it from subs, so it is never closed twice.
func (o *Origin) unsubscribe(ch chan originEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.subs, ch)
}

// ServeHTTP serves /stats, and the event stream on /events and below.
func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/stats":
		o.serveStats(w, r)
	case r.URL.Path == "/events" || strings.HasPrefix(r.URL.Path, "/events/"):
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		o.serveEvents(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (o *Origin) serveStats(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_ = json.NewEncoder(w).Encode(map[string]int64{
		"connections":       o.conns.Load(),
		"connections_total": o.total.Load(),
	})
}

// serveEvents streams the clock's events to one connection until the
// client goes away or the origin closes.
func (o *Origin) serveEvents(w http.ResponseWriter, r *http.Request) {
	ch := o.subscribe()
	if ch == nil {
		http.Error(w, "origin closed", http.StatusServiceUnavailable)
		return
	}
	defer o.unsubscribe(ch)
	o.conns.Add(1)
	defer o.conns.Add(-1)
	o.total.Add(1)

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// A comment first: sse_fanout does not pass comments on, so clients
	// never see it.
	if _, err := fmt.Fprint(w, ": demo origin\n\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}

	stream := r.URL.RequestURI()
	var buf []byte
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return // the origin closed, or this connection fell behind
			}
			buf = o.appendEvent(buf[:0], ev, stream)
			if _, err := w.Write(buf); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

// messagePayload is the data of a message event.
type messagePayload struct {
	N                 int64  `json:"n"`
	SentUnixMs        int64  `json:"sent_unix_ms"`
	Stream            string `json:"stream"`             // the path and query the origin was asked for
	OriginConnections int64  `json:"origin_connections"` // event-stream connections the origin has open
}

// tickPayload is the data of a tick event.
type tickPayload struct {
	N          int64 `json:"n"`
	SentUnixMs int64 `json:"sent_unix_ms"`
}

// appendEvent appends the wire form of ev, as sent on the given stream, to
// dst.
func (o *Origin) appendEvent(dst []byte, ev originEvent, stream string) []byte {
	if ev.tick {
		data, _ := json.Marshal(tickPayload{N: ev.n, SentUnixMs: ev.sentMs})
		dst = append(dst, "event: tick\ndata: "...)
		dst = append(dst, data...)
		return append(dst, "\n\n"...)
	}
	data, _ := json.Marshal(messagePayload{
		N:                 ev.n,
		SentUnixMs:        ev.sentMs,
		Stream:            stream,
		OriginConnections: o.conns.Load(),
	})
	dst = append(dst, "id: "...)
	dst = strconv.AppendInt(dst, ev.n, 10)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}
