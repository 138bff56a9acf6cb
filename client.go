package ssefanout

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"go.uber.org/zap"
)

// This file is the client: its cursor into the stream's ring, and next,
// the one place that decides what a client is sent next, whichever writer
// serves it (its request goroutine, respwriter.go, or a shared writer,
// sharedwriter.go). It also holds the lag rule, the one hook a client ends
// through (end), and the one way clients are ended over a moment of their
// own (endWithin).

var (
	errSlowClient     = errors.New("client fell more than client_queue events behind")
	errHandlerStopped = errors.New("handler unloaded")
)

// closeSpread is the window over which the clients of a closing stream, or
// of an unloaded config, are ended: at once, they would all reconnect in
// the same millisecond.
const closeSpread = 2 * time.Second

// writer is what serves a client, or a multiplexed page (served): its
// own request goroutine (requestWriter, respwriter.go), which serves that
// one, or one of its stream's shared writers (detachedClient,
// sharedwriter.go), which serve many. A client never knows which.
type writer interface {
	// wake tells the writer there may be something to send to the client.
	// It never blocks.
	wake()
	// end is told that the client was ended (client.end): it ends a write
	// of the client's in flight, and closes its connection if it holds it.
	end()
}

// served is what one connection's writer serves: a client, or a
// multiplexed page's members, one client per stream (muxClient, mux.go),
// which end together. Either writer, in the request goroutine
// (respWriter.serve) or shared (writerShard), asks it for its next bytes,
// and knows nothing else of which it serves.
type served interface {
	// next appends what it is to be sent next, up to about limit bytes,
	// and reports whether more remains (client.next). An error ends it.
	next(out []byte, limit int) (_ []byte, more bool, err error)
	// serveBy has w serve it from now on: w is woken when there may be
	// something to send, and told when it ends.
	serveBy(w writer)
	// wakeups holds a token when there may be something to send, for its
	// request goroutine, which its requestWriter wakes.
	wakeups() <-chan struct{}
	// ended is closed when it is ended; why says why.
	ended() <-chan struct{}
	why() error
	// end ends it with cause.
	end(cause error)
}

func (c *client) wakeups() <-chan struct{} { return c.wakeC }
func (c *client) ended() <-chan struct{}   { return c.done }
func (c *client) why() error               { return c.cause }

// client is one downstream connection. The hub never writes to it: it moves
// nothing but a wake-up signal, and the client's writer copies its frames
// out of the stream's ring (next).
type client struct {
	ring    *ring     // the stream's frames
	signals *signals  // the stream's keepalive rounds and retry time
	pack    packer    // appends what it is sent, compressed or as it is (compresschain.go)
	cfg     *settings // its handler's: what serves it (see settings)
	metrics *upstreamMetrics

	w      atomic.Pointer[writer] // what serves it; it changes once, if it is detached
	cursor atomic.Uint64          // seq of the last frame handed to the writer
	wakeC  chan struct{}          // holds one token when there may be work for its request goroutine
	done   chan struct{}          // closed when the client is ended
	cause  error                  // why it was ended; set before done closes
	once   sync.Once              // guards done

	retry       int64   // the retry sent to this client, in ms; < 0: the origin's
	retryFactor float64 // scales the retry sent to this client (retry_jitter)

	// Set by join, before the writer starts.
	stop      <-chan struct{} // its handler's: closed when its config is unloaded
	filter    *clientFilter   // the event types it is sent; nil: every frame
	primeAt   uint64          // the seq after which the priming block goes
	primeID   string          // the id the priming block sets
	staleID   clientCursor    // the cursor that could not be served; "" if it was unusable
	catchUpID clientCursor    // the cursor to fetch from the origin first, if catchingUp
	via       []string        // the sse_fanout node it came from, if it is another tier's upstream connection (tier.go)
	priming   bool            // an id-only block setting primeID goes once the frames up to primeAt are sent
	stale     bool            // announce staleID with a stale_event first
	resumed   cursorOutcome   // what its cursor got, for its log lines
	// catchingUp is set while the client reads its catch-up from the
	// origin; the stream neither wakes nor cuts it then.
	catchingUp bool

	// For its log lines (stream.logStarted, logEnded): who it is, set
	// before its writer starts, when it joined, and what it was sent.
	peer   []zap.Field
	joined int64 // Unix nanoseconds
	sent   sentCount

	// joinedAt is the stream's head when the client joined or spliced in:
	// frames up to it are its replay, which does not count as lag. The
	// stream's mu guards it, and catchingUp (above).
	joinedAt uint64

	// What the client was last sent, kept for whichever writer serves it;
	// one writer at a time.
	sentRetry  int64  // the last retry time written; -1 before any
	keepalives uint64 // the stream's keepalive rounds when it was last sent something

	// When its write in flight began, in Unix nanoseconds (0: none), for a
	// writer that may be held in one: a respWriter past the chain, which
	// writes without deadlines, and a detached client's drain. While it is
	// set, publish applies the lag rule to the client, which its writer
	// cannot; the stream's watchdog ends a write that takes longer than
	// write_timeout. abort ends the write in flight (respWriter); ending
	// the client ends it too.
	writing atomic.Int64
	abort   atomic.Pointer[func()]
}

// markWriting marks cs, the clients one response serves (a client, or a
// multiplexed page's members), as held in a write begun at since, in Unix
// nanoseconds, or, with 0, as not (client.writing): every writer that may
// be held in a write marks them all, so that each of their streams sees
// it.
func markWriting(cs []*client, since int64) {
	for _, c := range cs {
		c.writing.Store(since)
	}
}

// noWriter serves a page's member until its page does: it has nothing to
// wake or end.
var noWriter writer = pendingWriter{}

type pendingWriter struct{}

func (pendingWriter) wake() {}
func (pendingWriter) end()  {}

// cursorOutcome is what a client's cursor got, as its log lines say.
type cursorOutcome uint8

const (
	cursorNone    cursorOutcome = iota // it sent none
	cursorReplay                       // the buffer held it
	cursorCatchUp                      // the origin was asked from it (catchup.go)
	cursorStale                        // nothing could serve it
)

func (o cursorOutcome) String() string {
	return [...]string{"none", "replay", "catch-up", "stale"}[o]
}

// sentCount counts what was written to a client, by whichever writer
// served it; the line that logs its end reads it.
type sentCount struct {
	events atomic.Int64 // events, its catch-up and stale event included
	bytes  atomic.Int64 // bytes of its body, as written
}

// signals is what every client of a stream is sent besides its frames:
// the keepalive rounds and the origin's retry time.
type signals struct {
	keepalives   atomic.Uint64 // count of keepalive rounds; clients compare it with theirs
	filterRounds atomic.Uint64 // count of the rounds that filtered clients count (clientFilter.quietRound)
	originRetry  atomic.Int64  // the origin's latest retry in ms; -1 before any
}

// newClient returns a client of the stream whose ring and signals r and
// sig are, of a handler with the settings cfg. A client with a request
// writer of its own is served by it until it is detached; a page's member
// (pageMember) is served by its page's, once the page is made
// (newMuxClient), and by none until then: the page's first send reads
// what it missed.
func newClient(r *ring, sig *signals, cfg *settings, metrics *upstreamMetrics, pageMember bool) *client {
	c := &client{
		ring:        r,
		signals:     sig,
		pack:        plainPacker{},
		cfg:         cfg,
		metrics:     metrics,
		done:        make(chan struct{}),
		retry:       cfg.retry,
		retryFactor: 1,
		sentRetry:   -1,
		keepalives:  sig.keepalives.Load(),
		joined:      time.Now().UnixNano(),
	}
	if pageMember {
		c.w.Store(&noWriter)
	} else {
		c.wakeC = make(chan struct{}, 1)
		c.serveBy(requestWriter{c})
	}
	if cfg.retryJitter > 0 {
		spread := float64(cfg.retryJitter) / 100
		c.retryFactor = 1 - spread + 2*spread*rand.Float64()
	}
	return c
}

// end ends the client with cause: its writer stops at its next look, and
// is told (writer.end), so that a write of its in flight is ended. It is
// the one way a client ends.
func (c *client) end(cause error) {
	c.once.Do(func() {
		c.cause = cause
		close(c.done)
		c.writer().end()
	})
}

// abortWrite ends the client's write in flight, if there is one and its
// writer can end it (respWriter). It never waits: ending a write may take
// a message to a connection's goroutine.
func (c *client) abortWrite() {
	if f := c.abort.Load(); f != nil && c.writing.Load() != 0 {
		go (*f)()
	}
}

// endWithin ends the client with cause at a random moment within
// closeSpread: so the clients of a closing stream or config do not all
// reconnect at once. Until then it is served as before. It is the one way
// clients are ended over time.
func (c *client) endWithin(cause error) {
	time.AfterFunc(rand.N(closeSpread), func() { c.end(cause) })
}

// place puts c's cursor at seq, with what the stream published up to head
// (its replay) not counted as lag: where it joins (stream.addLocked), or
// where its catch-up meets the shared stream (stream.splice). The stream's
// mu and the ring's lock must be held.
func (c *client) place(seq, head uint64) {
	c.cursor.Store(seq)
	c.joinedAt = head
}

// lagging reports whether c has broken the lag rule: it has fallen more
// than client_queue frames behind what was published since it joined (its
// replay does not count), or behind what the ring still holds. The ring's
// lock must be held.
func (c *client) lagging(queue uint64) bool {
	cursor := c.cursor.Load()
	return c.ring.head-max(cursor, c.joinedAt) > queue || cursor+1 < c.ring.tail
}

// cutIfLagging applies the lag rule: a client that breaks it is ended,
// and counted. It reports whether it ended c. The ring's lock must be held.
func (c *client) cutIfLagging(queue uint64) bool {
	if !c.lagging(queue) {
		return false
	}
	c.metrics.slowClientDrops.Inc()
	c.end(errSlowClient)
	return true
}

// next appends to out what c is to be sent next: a changed retry time, then
// the frames after its cursor that its filter passes, up to about limit
// bytes of them, with the cursor priming block where it belongs, and, for
// a filtered client, the id-only block that keeps its lastEventId with the
// stream (clientFilter.settle); or, with nothing else to send, a
// keepalive if a heartbeat round passed since c was last sent anything.
// It moves the cursor past the frames it handled, counts them as sent or
// filtered, and reports whether frames remain after them. A client that
// breaks the lag rule is ended, and next returns errSlowClient.
func (c *client) next(out []byte, limit int) (_ []byte, more bool, err error) {
	start := len(out)
	out = c.appendRetry(out)
	cfg := c.cfg
	queue := uint64(cfg.clientQueue)
	n, size, skipped := 0, 0, 0
	c.ring.mu.RLock()
	if c.cutIfLagging(queue) {
		c.ring.mu.RUnlock()
		return out[:start], false, errSlowClient
	}
	from := c.cursor.Load()
	seq := from
	for seq < c.ring.head && len(out)-start < limit {
		seq++
		f := c.ring.get(seq)
		if c.priming && seq > c.primeAt {
			out = c.appendPrime(out)
		}
		if c.filter != nil && !c.filter.pass(f) {
			skipped++
			continue
		}
		before := len(out)
		out = c.appendFrame(out, f)
		n++
		size += len(out) - before
	}
	more = seq < c.ring.head
	if c.priming && !more {
		out = c.appendPrime(out)
	}
	quiet := !more && n == 0 && len(out) == start && c.keepaliveDue()
	if c.filter != nil && !more {
		if id, send := c.filter.settle(c.ring, seq, cfg.buffer, quiet); send {
			out = c.appendIDBlock(out, id)
		}
	}
	c.ring.mu.RUnlock()
	if seq != from {
		// Only when it moved: publish may have moved a filtered client's
		// cursor meanwhile (clientFilter.passOver), and only when next
		// found nothing to hand out.
		c.cursor.Store(seq)
	}
	if n > 0 {
		c.keepalives = c.signals.keepalives.Load() // frames count as activity
		c.metrics.eventsSent.Add(float64(n))
		c.metrics.bytesSent.Add(float64(size))
		c.sent.events.Add(int64(n))
	}
	if quiet && len(out) == start {
		out = c.appendKeepalive(out)
	}
	if c.filter != nil {
		if len(out) > start {
			c.filter.sent(c.signals)
		}
		c.metrics.countFiltered(skipped)
	}
	return out, more, nil
}

// keepaliveDue reports whether a keepalive round passed since c was last
// sent anything, or, for a filtered client, two filter rounds; it counts
// the round as answered.
func (c *client) keepaliveDue() bool {
	k := c.signals.keepalives.Load()
	due := k != c.keepalives
	c.keepalives = k
	return due || c.filter != nil && c.filter.quietRound(c.signals)
}

// appendRetry appends the client's retry time if it changed since it was
// last sent: the configured one, or the origin's, spread by retry_jitter.
func (c *client) appendRetry(out []byte) []byte {
	retry := c.retry
	if retry < 0 {
		retry = c.signals.originRetry.Load()
	}
	if retry < 0 {
		return out
	}
	retry = int64(float64(retry) * c.retryFactor)
	if retry == c.sentRetry {
		return out
	}
	c.sentRetry = retry
	return c.pack.own(out, sse.AppendRetry(nil, retry))
}

// appendOpening appends the first bytes of c's body: the retry time, if
// c has one to be sent (next would send it first), else sse.Opening.
func (c *client) appendOpening(out []byte) []byte {
	start := len(out)
	if out = c.appendRetry(out); len(out) > start {
		return out
	}
	return c.pack.own(out, []byte(sse.Opening))
}

// appendPrime appends the cursor priming block: it sets the client's last
// event ID to the stream's at join time without firing an event, so that a
// client that drops before the next event still resumes from there.
func (c *client) appendPrime(out []byte) []byte {
	out = c.pack.id(out, c.primeID)
	c.priming = false
	if c.filter != nil {
		c.filter.primed(c.primeID, c.primeAt)
	}
	return out
}

// appendFrame appends f as c is sent it: as is, or compressed in c's
// encoding. The ring's read lock must be held.
func (c *client) appendFrame(out []byte, f *frame) []byte {
	return c.pack.frame(out, f)
}

// appendIDBlock appends an id-only block: it sets the client's
// lastEventId to id and fires no event.
func (c *client) appendIDBlock(out []byte, id string) []byte {
	return c.pack.id(out, id)
}

// appendKeepalive appends a keepalive comment.
func (c *client) appendKeepalive(out []byte) []byte {
	return c.pack.keepalive(out)
}

// encoding is what c's stream is compressed in; nil: none.
func (c *client) encoding() *encoding { return c.pack.encoding() }

// appendIDOnly appends an id-only block: it sets a client's lastEventId
// to id and fires no event.
func appendIDOnly(out []byte, id string) []byte {
	return sse.AppendEvent(out, &sse.Event{ID: id}, true)
}

// plainPacker is a plain client's packer: everything as it is.
type plainPacker struct{}

func (plainPacker) frame(out []byte, f *frame) []byte { return append(out, f.bytes...) }
func (plainPacker) own(out, plain []byte) []byte      { return append(out, plain...) }
func (plainPacker) loose(out []byte, f *frame) []byte { return append(out, f.bytes...) }
func (plainPacker) id(out []byte, id string) []byte   { return appendIDOnly(out, id) }
func (plainPacker) keepalive(out []byte) []byte       { return append(out, sse.Keepalive...) }
func (plainPacker) encoding() *encoding               { return nil }
func (plainPacker) release()                          {}
