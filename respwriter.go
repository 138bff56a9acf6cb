package ssefanout

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"
)

// This file is the writer that serves a client in its own request
// goroutine, through Caddy's response writer chain: every client at the
// start of its response, and for good those that are not detached
// (detach.go).

// errResponseBuffered ends a request whose response a handler in front of
// sse_fanout holds back.
var errResponseBuffered = errors.New("a handler before sse_fanout buffers the response")

// requestWriter is the writer of a client served in its own request
// goroutine (respWriter.serve): it serves that one client, which it wakes
// through the client's own channel.
type requestWriter struct{ c *client }

// wake leaves a token for the client's request goroutine. It never
// blocks: a writer that is busy finds the token when it comes back.
func (w requestWriter) wake() {
	select {
	case w.c.wakeC <- struct{}{}:
	default:
	}
}

// end ends the client's write in flight, if its writer writes past
// Caddy's chain (see client.abortWrite); the request goroutine sees that
// the client ended at its next look.
func (w requestWriter) end() { w.c.abortWrite() }

// maxBatchWrite bounds how much of a batch is gathered before it is written,
// so that a long replay does not gather the whole buffer in a copy.
const maxBatchWrite = 64 << 10

// maxKeptBatchBuffer is the largest batch buffer a client keeps between
// batches; a live event or a few fit.
const maxKeptBatchBuffer = 4 << 10

// respWriter writes what a client is sent to its response.
//
// Where the writer chain passes the bytes through untouched
// (passesThrough), it writes to the innermost writer, past Caddy's
// wrappers: they would only count the bytes and move a write deadline
// around every write and flush, which over HTTP/2 costs a message to the
// connection's goroutine each time. A write that never completes is then
// the stream's watchdog's to end (see client.writing). Elsewhere it writes
// through the chain, under Caddy's write_idle_timeout or deadlines of its
// own.
type respWriter struct {
	w            io.Writer
	rc           *http.ResponseController
	watch        []*client // the request's clients (a multiplexed request's members), if past: their writing is set while a write is in flight
	sent         *sentCount
	writeTimeout time.Duration
	deadlines    bool   // set write deadlines of our own (see ownDeadlines)
	armed        bool   // the deadline for the current batch is set
	out          []byte // the bytes of the current batch
	err          error  // the first write error
}

// newRespWriter returns the writer of the response w of the request's
// clients cs (one, or a multiplexed request's members, cs[0] first). With
// past, it writes past Caddy's writer chain, sets every client's writing
// while a write is in flight, and arms cs[0]'s abort hook; without,
// it sets write deadlines of its own if deadlines is set (the caller knows
// whether the chain bounds its writes already: ownDeadlines).
func newRespWriter(w http.ResponseWriter, rc *http.ResponseController, writeTimeout time.Duration, past, deadlines bool, cs []*client) *respWriter {
	c := cs[0]
	if !past {
		return &respWriter{w: w, rc: rc, sent: &c.sent, writeTimeout: writeTimeout, deadlines: deadlines}
	}
	inner := innermost(w)
	rw := &respWriter{w: inner, rc: http.NewResponseController(inner), watch: cs, sent: &c.sent, writeTimeout: writeTimeout}
	abort := func() {
		// A deadline in the past ends the write in flight: net/http's
		// HTTP/1 connection and HTTP/2 stream both allow it from another
		// goroutine, as their own timers do.
		_ = rw.rc.SetWriteDeadline(time.Unix(1, 0))
	}
	c.abort.Store(&abort)
	return rw
}

// layers returns w and every writer it wraps, outermost first: Caddy's
// wrappers, each with Unwrap, down to the server's own.
func layers(w http.ResponseWriter) []http.ResponseWriter {
	all := []http.ResponseWriter{w}
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return all
		}
		w = u.Unwrap()
		all = append(all, w)
	}
}

// innermost returns the server's own writer under w's wrappers.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	all := layers(w)
	return all[len(all)-1]
}

// serve writes to the response what x is sent, as it comes, until x is
// ended: when the client goes away (ctx), its stream or handler ends it,
// or it breaks the lag rule; or until a write fails. It waits on two
// channels only, since it wakes for every event of the stream.
func (rw *respWriter) serve(ctx context.Context, x served) error {
	stopWatch := context.AfterFunc(ctx, func() { x.end(errClientGone) })
	defer stopWatch()
	for {
		if err := rw.send(x); err != nil {
			return err
		}
		select {
		case <-x.wakeups():
		case <-x.ended():
			switch x.why() {
			case errClientGone:
				return nil
			case errSlowClient:
			default:
				// Ended at its moment: what was published before goes too.
				if err := rw.send(x); err != nil {
					return err
				}
			}
			return x.why()
		}
	}
}

// open writes and flushes the first bytes of c's body (client.appendOpening)
// right after its head, whatever follows. A proxy in front that holds a
// response's head until its first body bytes (an HTTP/2 proxy that waits
// for a DATA frame) would otherwise hold the head of a quiet stream, or
// one whose catch-up takes a while, until its first event; and Firefox
// fires an EventSource's open only at the first body byte. Neither a
// retry time nor a comment is an event: what a page sees is the same.
func (rw *respWriter) open(c *client) error {
	rw.out = c.appendOpening(rw.out)
	rw.flush()
	return rw.err
}

// send writes, in one flush, what x is to be sent next (served.next).
func (rw *respWriter) send(x served) error {
	wrote := false
	for more := true; more && rw.err == nil; { // in writes of about maxBatchWrite each
		var err error
		rw.out, more, err = x.next(rw.out, maxBatchWrite)
		if err != nil {
			return err
		}
		wrote = wrote || len(rw.out) > 0
		rw.writeOut()
	}
	if wrote {
		rw.flush()
	}
	return rw.err
}

// writeLoose adds f, a frame of c's own (an event of its catch-up, its
// stale event), to the current batch, as c's packer has it (compressed
// when c's stream is), keeping only the first error. A batch goes out in
// one write (or one per maxBatchWrite) when it is flushed.
func (rw *respWriter) writeLoose(c *client, f *frame) {
	if rw.err != nil {
		return
	}
	rw.out = c.pack.loose(rw.out, f)
	if len(rw.out) >= maxBatchWrite {
		rw.writeOut()
	}
}

// writeOut writes what the batch gathered. Its first write sets the
// deadline that the whole batch, flush included, must meet, or tells the
// watchdog that a write is in flight.
func (rw *respWriter) writeOut() {
	if rw.err != nil || len(rw.out) == 0 {
		rw.out = rw.out[:0]
		return
	}
	if rw.watch != nil && !rw.armed {
		markWriting(rw.watch, time.Now().UnixNano())
		rw.armed = true
	}
	if !rw.armed && rw.deadlines {
		err := rw.rc.SetWriteDeadline(time.Now().Add(rw.writeTimeout))
		if errors.Is(err, http.ErrNotSupported) {
			rw.deadlines = false
		}
		rw.armed = err == nil
	}
	n, err := rw.w.Write(rw.out)
	rw.sent.bytes.Add(int64(n))
	rw.err = err
	rw.out = rw.out[:0]
}

// flush ends the batch: it writes and flushes it, then lifts the deadline,
// since on HTTP/2 a deadline left armed resets the stream when it fires
// even with no write in flight, and on HTTP/1 it would outlive the response.
func (rw *respWriter) flush() {
	rw.writeOut()
	if rw.err == nil {
		rw.err = rw.rc.Flush()
	}
	if rw.armed && rw.watch != nil {
		rw.armed = false
		markWriting(rw.watch, 0)
	} else if rw.armed {
		rw.armed = false
		if err := rw.rc.SetWriteDeadline(time.Time{}); err != nil && rw.err == nil {
			rw.err = err
		}
	}
	if cap(rw.out) > maxKeptBatchBuffer {
		rw.out = nil // a replay's buffer is not worth keeping per client
	}
}
