package demoapp

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sseorigin"
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
	events *sseorigin.Origin
	stop   context.CancelFunc // stops the clocks
	clocks sync.WaitGroup
}

// originQueue is how many events a connection may fall behind before the
// origin drops it.
const originQueue = 64

// NewOrigin starts an origin that sends a message every messageEvery and a
// tick every tickEvery. Close stops it.
func NewOrigin(messageEvery, tickEvery time.Duration) *Origin {
	ctx, stop := context.WithCancel(context.Background())
	o := &Origin{
		events: sseorigin.New(sseorigin.Options{
			Queue: originQueue,
			Path:  "/events",
			// A comment first: sse_fanout does not pass comments on, so
			// clients never see it.
			Preamble: ": demo origin\n\n",
		}),
		stop: stop,
	}
	o.clocks.Go(func() {
		sseorigin.RunClock(ctx, messageEvery, func(n uint64) {
			o.events.Publish(message{n: n, sentMs: time.Now().UnixMilli(), origin: o.events})
		})
	})
	o.clocks.Go(func() {
		sseorigin.RunClock(ctx, tickEvery, func(n uint64) {
			o.events.Publish(tick{N: n, SentUnixMs: time.Now().UnixMilli()})
		})
	})
	return o
}

// Close stops the clock and ends every open event stream. It waits for the
// clock, not for the connections' handlers, which return on their own.
func (o *Origin) Close() {
	o.stop()
	o.clocks.Wait()
	o.events.Close()
}

// Connections returns how many event-stream connections are open now.
func (o *Origin) Connections() int64 { return o.events.Connections() }

// ServeHTTP serves /stats, and the event stream on /events and below.
func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.events.ServeHTTP(w, r)
}

// message is the demo's unnamed event, with an id.
type message struct {
	n      uint64
	sentMs int64             // when the clock fired, in Unix milliseconds
	origin *sseorigin.Origin // whose connections the payload reports
}

// messagePayload is the data of a message event.
type messagePayload struct {
	N                 uint64 `json:"n"`
	SentUnixMs        int64  `json:"sent_unix_ms"`
	Stream            string `json:"stream"`             // the path and query the origin was asked for
	OriginConnections int64  `json:"origin_connections"` // event-stream connections the origin has open
}

// Seq returns the message's id, as a number.
func (m message) Seq() uint64 { return m.n }

// AppendWire appends the message as sent on stream, with the origin's
// connection count as it is now.
func (m message) AppendWire(dst []byte, stream string) []byte {
	data, _ := json.Marshal(messagePayload{
		N:                 m.n,
		SentUnixMs:        m.sentMs,
		Stream:            stream,
		OriginConnections: m.origin.Connections(),
	})
	dst = append(dst, "id: "...)
	dst = strconv.AppendUint(dst, m.n, 10)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}

// tick is the demo's event named tick, without an id; it is also its data.
type tick struct {
	N          uint64 `json:"n"`
	SentUnixMs int64  `json:"sent_unix_ms"`
}

// Seq returns 0: a tick has no id.
func (tick) Seq() uint64 { return 0 }

// AppendWire appends the tick as sent; it is the same on every stream.
func (t tick) AppendWire(dst []byte, _ string) []byte {
	data, _ := json.Marshal(t)
	dst = append(dst, "event: tick\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}
