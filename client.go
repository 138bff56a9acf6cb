package ssefanout

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// This file is the client: its cursor into the stream's ring, what it is to
// be sent next (appendPending), and the writer that serves it in its own
// request goroutine. A detached client is served by a shared writer
// instead (writer.go).

var keepaliveFrame = []byte(": keepalive\n\n")

// errHandlerStopped ends clients of a handler whose config was unloaded.
var errHandlerStopped = errors.New("handler unloaded")

// client is one downstream connection. The hub never writes to it: it moves
// nothing but a wake-up signal, and the client copies its frames out of the
// stream's ring and writes them itself.
type client struct {
	s      *stream
	cursor atomic.Uint64 // seq of the last frame handed to the writer
	wakeC  chan struct{} // holds one token when there may be work
	done   chan struct{} // closed when the hub cuts the client
	cause  error         // why the hub cut the client; set before done closes
	once   sync.Once     // guards done
	retry  int64         // the retry sent to this client, in ms; < 0: the origin's
	// retryFactor scales the retry sent to this client (retry_jitter).
	retryFactor float64

	// Set by join, before the writer starts.
	prime     []byte // an id-only block to send once the frames up to primeAt are sent
	primeAt   uint64
	staleID   clientCursor // the cursor that could not be served; "" if it was unusable
	stale     bool         // announce staleID with a stale_event first
	catchUpID clientCursor // the cursor to fetch from the origin first, if catchingUp

	// joinedAt is the stream's head when the client joined or spliced in:
	// frames up to it are its replay, which does not count as lag.
	// catchingUp is set while the client reads its catch-up from the origin;
	// the stream neither wakes nor cuts it then. The stream's mu guards it.
	joinedAt   uint64
	catchingUp bool

	// What the client was last sent, kept for whichever writer serves it
	// (its request goroutine, then maybe a shared writer, see detach.go).
	sentRetry  int64  // the last retry time written; -1 before any
	keepalives uint64 // the stream's keepalive rounds when it was last sent something

	// Set when the client is detached from its request (see detach.go).
	stop       <-chan struct{} // the handler's: closed when its config is unloaded
	conn       *detachedConn   // the taken-over connection; nil while in the request
	shard      *writerShard    // the shared writer that serves it; nil while in the request
	shardIndex int             // its index in its shard's clients; the shard's mu guards it
}

func newClient(s *stream) *client {
	cfg := s.reg.settings.Load()
	c := &client{
		s:           s,
		wakeC:       make(chan struct{}, 1),
		done:        make(chan struct{}),
		retry:       cfg.retry,
		retryFactor: 1,
		sentRetry:   -1,
		keepalives:  s.keepalives.Load(),
	}
	if cfg.retryJitter > 0 {
		spread := float64(cfg.retryJitter) / 100
		c.retryFactor = 1 - spread + 2*spread*rand.Float64()
	}
	return c
}

// ownDeadlines reports whether the client's writes need deadlines of our
// own: not when Caddy's write_idle_timeout (1 minute by default) already
// bounds every write and flush of the response, which is cheaper.
func ownDeadlines(w http.ResponseWriter) bool {
	for {
		if _, ok := w.(*caddyhttp.IdleTimeoutWriter); ok {
			return false
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return true
		}
		w = u.Unwrap()
	}
}

// errResponseBuffered ends a request whose response a handler in front of
// sse_fanout holds back.
var errResponseBuffered = errors.New("a handler before sse_fanout buffers the response")

// responseBuffered reports whether some layer of w's chain holds the
// response back instead of passing it on, as Caddy's response recorder
// does for log_append {http.response.body} or an intercept that handles
// the response. It must be asked after the header is written, since a
// recorder decides then.
func responseBuffered(w http.ResponseWriter) bool {
	for {
		if b, ok := w.(interface{ Buffered() bool }); ok && b.Buffered() {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// wake tells the client's writer there may be something to send. It never
// blocks: a writer that is busy finds the token when it comes back.
func (c *client) wake() {
	select {
	case c.wakeC <- struct{}{}:
	default:
	}
}

// cut ends the client's response with cause.
func (c *client) cut(cause error) {
	c.once.Do(func() {
		c.cause = cause
		close(c.done)
	})
}

// clientWriter writes frames, retry times and keepalives to one response.
type clientWriter struct {
	w            io.Writer
	rc           *http.ResponseController
	writeTimeout time.Duration
	deadlines    bool     // set write deadlines of our own (see ownDeadlines)
	armed        bool     // the deadline for the current batch is set
	batch        []*frame // the frames of the current batch
	out          []byte   // the bytes of the current batch
	err          error    // the first write error
}

func newClientWriter(w http.ResponseWriter, rc *http.ResponseController, s *stream) *clientWriter {
	return &clientWriter{
		w:            w,
		rc:           rc,
		writeTimeout: s.reg.settings.Load().writeTimeout,
		deadlines:    ownDeadlines(w),
	}
}

// begin writes what a client gets before live events: its catch-up from
// the origin, the stale_event, and its replay from the buffer. The
// response headers must already be sent.
func (c *client) begin(ctx context.Context, cw *clientWriter) error {
	if c.catchUpID != "" {
		if err := c.catchUp(ctx, cw, c.stop); err != nil {
			return err
		}
	}
	if c.stale {
		c.announceStale(cw)
	}
	if cw.err != nil {
		return cw.err
	}
	return c.writePending(cw)
}

// serve writes live events to cw until the client goes away (ctx), the hub
// cuts it, the handler is unloaded (c.stop), or a write fails.
func (c *client) serve(ctx context.Context, cw *clientWriter) error {
	stop := c.stop
	var leave <-chan time.Time // set once the handler is unloaded
	for {
		if err := c.writePending(cw); err != nil {
			return err
		}
		select {
		case <-c.wakeC:
		case <-c.done:
			if c.cause != errSlowClient {
				// The stream closed: send what it published before that,
				// then leave at a moment of this client's own.
				if err := c.writePending(cw); err != nil {
					return err
				}
				spreadOut(ctx)
			}
			return c.cause
		case <-stop:
			// The stream lives on in the new config; this client goes on
			// with it until a moment of its own, then reconnects there.
			stop = nil
			leave = time.After(rand.N(closeSpread))
		case <-leave:
			return errHandlerStopped
		case <-ctx.Done():
			return nil
		}
	}
}

// closeSpread is the window over which the clients of a closing stream, or
// of an unloaded config, are disconnected: at once, they would all
// reconnect in the same millisecond.
const closeSpread = 2 * time.Second

// spreadOut waits for a random moment within closeSpread, or until ctx ends.
func spreadOut(ctx context.Context) {
	t := time.NewTimer(rand.N(closeSpread))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// writePending writes, in one flush, what the client has not been sent.
func (c *client) writePending(cw *clientWriter) error {
	frames, ok := c.s.framesAfter(cw.batch[:0], c.cursor.Load())
	if !ok { // what it had yet to read was evicted
		c.s.reg.metrics.slowClientDrops.Inc()
		return errSlowClient
	}
	wrote := false
	rest := frames
	for { // in writes of about maxBatchWrite, so a long replay is not copied whole
		out, n, size := c.appendPending(cw.out, rest, maxBatchWrite)
		c.s.reg.metrics.countSent(n, size)
		wrote = wrote || len(out) > 0
		cw.out = out
		cw.writeOut()
		rest = rest[n:]
		if n == 0 || len(rest) == 0 {
			break
		}
	}
	clear(frames) // drop references to frames the ring may evict
	cw.batch = frames[:0]
	if wrote {
		cw.flush()
	}
	return cw.err
}

// appendPending appends to out what the client has yet to be sent, given
// frames, the frames after its cursor: a changed retry time, then the
// frames, with the cursor priming block where it belongs; or, when there is
// nothing else, a keepalive if a heartbeat round passed since the client
// was last sent anything. It stops adding frames once out holds limit
// bytes. It moves the cursor past the frames it added and returns how many
// it added and their size.
func (c *client) appendPending(out []byte, frames []*frame, limit int) (_ []byte, n, size int) {
	start := len(out)
	retry := c.retry
	if retry < 0 {
		retry = c.s.originRetry.Load()
	}
	if retry >= 0 {
		retry = int64(float64(retry) * c.retryFactor)
	}
	if retry >= 0 && retry != c.sentRetry {
		out = appendRetry(out, retry)
		c.sentRetry = retry
	}
	for _, f := range frames {
		if len(out)-start >= limit {
			break
		}
		if c.prime != nil && f.seq > c.primeAt {
			out = c.appendPrime(out)
		}
		out = append(out, f.bytes...)
		size += len(f.bytes)
		n++
	}
	if n > 0 {
		c.cursor.Store(frames[n-1].seq)
		c.keepalives = c.s.keepalives.Load() // frames count as activity
	}
	if c.prime != nil && n == len(frames) {
		out = c.appendPrime(out)
	}
	if len(out) == start {
		if k := c.s.keepalives.Load(); k != c.keepalives {
			c.keepalives = k
			out = append(out, keepaliveFrame...)
		}
	}
	return out, n, size
}

// appendPrime appends the cursor priming block: it sets the client's last
// event ID to the stream's at join time without firing an event, so that a
// client that drops before the next event still resumes from there.
func (c *client) appendPrime(out []byte) []byte {
	out = append(out, c.prime...)
	c.prime = nil
	return out
}

// announceStale sends the stale_event for a cursor that could not be served.
func (c *client) announceStale(cw *clientWriter) {
	c.stale = false
	if c.catchUpID == "" { // a failed catch-up has logged already
		c.s.logger.Debug("client's Last-Event-ID is not in the buffer; sending live events")
	}
	name := c.s.reg.settings.Load().staleEvent
	if name == "" {
		return
	}
	// The cursor is the client's own and parseCursor let no line end in.
	cw.write(appendEvent(nil, &Event{Type: name, Data: string(c.staleID), HasData: true}, false))
	cw.flush()
}

// maxBatchWrite bounds how much of a batch is gathered before it is written,
// so that a long replay does not gather the whole buffer in a copy.
const maxBatchWrite = 64 << 10

// maxKeptBatchBuffer is the largest batch buffer a client keeps between
// batches; a live event or a few fit.
const maxKeptBatchBuffer = 4 << 10

// write adds b to the current batch, keeping only the first error. A batch
// goes out in one write (or one per maxBatchWrite) when it is flushed.
func (cw *clientWriter) write(b []byte) {
	if cw.err != nil {
		return
	}
	cw.out = append(cw.out, b...)
	if len(cw.out) >= maxBatchWrite {
		cw.writeOut()
	}
}

// writeOut writes what the batch gathered. Its first write sets the
// deadline that the whole batch, flush included, must meet.
func (cw *clientWriter) writeOut() {
	if cw.err != nil || len(cw.out) == 0 {
		return
	}
	if !cw.armed && cw.deadlines {
		err := cw.rc.SetWriteDeadline(time.Now().Add(cw.writeTimeout))
		if errors.Is(err, http.ErrNotSupported) {
			cw.deadlines = false
		}
		cw.armed = err == nil
	}
	_, cw.err = cw.w.Write(cw.out)
	cw.out = cw.out[:0]
}

// flush ends the batch: it writes and flushes it, then lifts the deadline,
// since on HTTP/2 a deadline left armed resets the stream when it fires
// even with no write in flight, and on HTTP/1 it would outlive the response.
func (cw *clientWriter) flush() {
	cw.writeOut()
	if cw.err == nil {
		cw.err = cw.rc.Flush()
	}
	if cw.armed {
		cw.armed = false
		if err := cw.rc.SetWriteDeadline(time.Time{}); err != nil && cw.err == nil {
			cw.err = err
		}
	}
	if cap(cw.out) > maxKeptBatchBuffer {
		cw.out = nil // a replay's buffer is not worth keeping per client
	}
}
