package ssefanout

import (
	"errors"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"
)

// This file takes an HTTP/1 client's connection over from net/http,
// so that its request goroutine, with its stack and buffers, can end: a
// shared writer (sharedwriter.go) serves it from then on, and a small
// goroutine waits for the client to hang up.
//
// Only the start of a response goes through Caddy's response writer
// chain: the headers, any replay and any catch-up. That is why a client is
// detached only where Caddy would write its bytes as they are: on
// HTTP/1.x, with no encoder of the chain compressing the response (our own
// compression, compress.go, is done before the chain), no handler in front
// holding it back, and no hard write_timeout to enforce. Over TLS, the
// TLS connection is taken over, and its records written as its socket has
// room for them (tlswrite_linux.go). A multiplexed page is taken over as
// one client: its members are served together (muxClient, mux.go).

var (
	errClientGone     = errors.New("client closed the connection")
	errClientSentData = errors.New("client sent data after its request")
)

// detach takes x's connection over from net/http and hands x to one of
// its first client's stream's shared writers: x is a client (cs holds it
// alone), or a multiplexed page, whose members cs are each a client of
// the stream ss[i]. It reports false, leaving the response as it was,
// when the response cannot be taken over: then the caller goes on serving
// x. The response must have started with "Transfer-Encoding: identity",
// so that net/http neither chunks it nor expects to end it, and be
// flushed, through a writer chain that passesThrough.
func detach(w http.ResponseWriter, x served, ss []*stream, cs []*client) bool {
	// Caddy's wrappers are passed over: what they do (count bytes, arm
	// deadlines) would outlive the request they belong to.
	hj, ok := innermost(w).(http.Hijacker)
	if !ok {
		return false
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		ss[0].logger.Debug("cannot take the connection over", zap.Error(err))
		return false
	}
	if brw.Reader.Buffered() > 0 {
		x.end(errClientSentData) // an EventSource sends nothing more
		conn.Close()
		leaveEnded(ss, cs, errClientSentData, false)
		return true
	}
	d := attach(x, ss, cs, conn)
	if d == nil { // ended meanwhile, or its stream closed
		conn.Close()
		cause := errStreamClosed
		select {
		case <-x.ended():
			cause = x.why()
		default: // ended at a moment of its own, to come (client.endWithin)
		}
		leaveEnded(ss, cs, cause, false)
		return true
	}
	for i, c := range cs {
		ss[i].logStarted(c, true) // before its watch, which logs its end
	}
	go d.watch()
	d.shard.wake()
	return true
}

// watch waits for a detached client to hang up, or for its connection to
// be closed under it, then removes it. An EventSource sends nothing after
// its request, so a byte from it ends it too.
func (d *detachedClient) watch() {
	defer d.shard.s.hub.wg.Done()
	var b [1]byte
	_, err := d.conn.Read(b[:])
	for tries := 0; errors.Is(err, os.ErrDeadlineExceeded) && tries < 3; tries++ {
		// A read deadline that the server's request handling set after
		// the takeover: this connection is ours, and has none.
		if err = d.conn.SetReadDeadline(time.Time{}); err == nil {
			_, err = d.conn.Read(b[:])
		}
	}
	if err == nil {
		d.x.end(errClientSentData)
	} else {
		d.x.end(errClientGone)
	}
	// Ended, by this call or before: a page whose end another call
	// began (a member's) has its cause once that call closed ended.
	<-d.x.ended()
	d.shard.remove(d)
	leaveEnded(d.ss, d.cs, d.x.why(), true)
}

// leaveEnded has each client cs[i] of a detached response, or of one that
// ended as it was to be detached, leave its stream ss[i], and logs why it
// ended.
func leaveEnded(ss []*stream, cs []*client, cause error, detached bool) {
	for i, c := range cs {
		ss[i].leave(c)
		ss[i].logEnded(c, cause, detached)
	}
}
