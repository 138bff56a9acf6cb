// Package sseorigin is a plain Server-Sent Events origin, the kind of
// application sse_fanout is put in front of: it knows nothing about
// fan-out, and sends every connection the same events. The benchmark
// origin (bench/sseorigin) and the demo (examples/demo/demoapp) are both
// built on it; they differ only in the events they publish and the options
// they pass.
//
// It is internal because it is test and demo scaffolding, not part of the
// module's API: its two users live in this module, so it can change with
// them, and sse_fanout's users are not offered a second, unrelated SSE
// server.
package sseorigin

import (
	"sync"
	"sync/atomic"
)

// Event is one event of an Origin, published once and sent to every
// connection.
type Event interface {
	// Seq is the event's sequence number, which a reconnecting client's
	// Last-Event-ID is compared with. 0 means it has none: it is then not
	// kept for replay.
	Seq() uint64
	// AppendWire appends the event as sent on stream, the path and query of
	// the request that opened the connection, to dst.
	AppendWire(dst []byte, stream string) []byte
}

// Options shape an Origin.
type Options struct {
	// Queue is how many events a connection may fall behind before it is
	// dropped. Below 1 counts as 1.
	Queue int
	// History is how many of the last events with a sequence number are
	// kept, so that a client that reconnects with Last-Event-ID gets the
	// kept ones after it. 0 keeps none: every connection starts with the
	// next event.
	History int
	// Path is where the event stream is served: that path and every path
	// below it, such as "/events". Empty serves it on every path but
	// /stats.
	Path string
	// Preamble is written to each connection before any event, such as a
	// comment. Empty writes nothing.
	Preamble string
}

// Origin sends the events it is given to every open event-stream
// connection, and serves them over HTTP (see ServeHTTP). Its methods are
// safe for concurrent use.
type Origin struct {
	opts Options

	conns     atomic.Int64  // event-stream connections open now
	total     atomic.Int64  // event-stream connections served since the start
	dropped   atomic.Int64  // connections dropped for falling behind
	published atomic.Uint64 // events published

	mu     sync.Mutex
	subs   map[chan Event]struct{} // one queue per open connection
	past   []Event                 // the last History events with a Seq, oldest first
	closed bool                    // set by Close; no connection is taken after it
}

// New returns an Origin with the given options. Close ends its streams.
func New(opts Options) *Origin {
	opts.Queue = max(opts.Queue, 1)
	return &Origin{opts: opts, subs: make(map[chan Event]struct{})}
}

// Publish hands ev to every connection, and keeps it for Last-Event-ID if
// it has a sequence number. A connection whose queue is full is dropped,
// so that none holds up the others; Publish never blocks on one.
func (o *Origin) Publish(ev Event) {
	o.published.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.opts.History > 0 && ev.Seq() > 0 {
		if len(o.past) == o.opts.History {
			copy(o.past, o.past[1:])
			o.past = o.past[:len(o.past)-1]
		}
		o.past = append(o.past, ev)
	}
	for ch := range o.subs {
		select {
		case ch <- ev:
		default:
			delete(o.subs, ch)
			close(ch)
			o.dropped.Add(1)
		}
	}
}

// subscribe registers a connection that last saw event after (0: none). It
// returns the kept events after that one, and the connection's queue, or a
// nil queue after Close.
func (o *Origin) subscribe(after uint64) ([]Event, chan Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, nil
	}
	var replay []Event
	if after > 0 {
		for _, ev := range o.past {
			if ev.Seq() > after {
				replay = append(replay, ev)
			}
		}
	}
	ch := make(chan Event, o.opts.Queue)
	o.subs[ch] = struct{}{}
	return replay, ch
}

// unsubscribe removes a connection that is leaving. Whoever removes a
// queue from subs closes it, so it is closed once.
func (o *Origin) unsubscribe(ch chan Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.subs[ch]; ok {
		delete(o.subs, ch)
		close(ch)
	}
}

// Close ends every open event stream, once each has been sent what it had
// queued, and makes the origin answer new ones with 503. It does not wait
// for the connections' handlers, which return on their own. Calling it
// again does nothing.
func (o *Origin) Close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	for ch := range o.subs {
		delete(o.subs, ch)
		close(ch)
	}
}

// Connections returns how many event-stream connections are open now.
func (o *Origin) Connections() int64 { return o.conns.Load() }

// Stats is what the origin reports on /stats, as JSON.
type Stats struct {
	Connections      int64  `json:"connections"`       // event-stream connections open now
	ConnectionsTotal int64  `json:"connections_total"` // served since the start
	Dropped          int64  `json:"dropped"`           // dropped for falling more than Queue events behind
	Events           uint64 `json:"events"`            // events published
}

// Stats returns the origin's counters now.
func (o *Origin) Stats() Stats {
	return Stats{
		Connections:      o.conns.Load(),
		ConnectionsTotal: o.total.Load(),
		Dropped:          o.dropped.Load(),
		Events:           o.published.Load(),
	}
}
