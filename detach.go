package ssefanout

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// This file takes a plain HTTP/1 client's connection over from net/http,
// so that its request goroutine, with its stack and buffers, can end: a
// shared writer (writer.go) serves it from then on, and a small goroutine
// waits for the client to hang up.
//
// Only the start of a response goes through Caddy's response writer
// chain: the headers, any replay and any catch-up. That is why a client is
// detached only where Caddy would write its bytes as they are: on
// HTTP/1.x without TLS, with no encoder compressing the response and no
// hard write_timeout to enforce.

var (
	errClientGone     = errors.New("client closed the connection")
	errClientSentData = errors.New("client sent data after its request")
)

// detachedConn is a client's connection once taken over from net/http.
type detachedConn struct {
	net.Conn
	raw syscall.RawConn // for writes that never wait; nil where unsupported

	// draining is set while a goroutine of the client's own writes what
	// its socket would not take at once (see drain); its shard leaves the
	// client alone until then. pending holds those bytes.
	draining atomic.Bool
	pending  []byte
}

// mayDetach reports whether r's client may be detached once its response
// has started: HTTP/1.x without TLS, when the config allows it and the
// server sets no hard write timeout, which a detached client would escape.
func (h *Handler) mayDetach(r *http.Request) bool {
	if !h.detachable || r.ProtoMajor != 1 || r.TLS != nil {
		return false
	}
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return ok && srv.WriteTimeout <= 0
}

// detach takes c's connection over from net/http and hands c to a shared
// writer. It reports false, leaving the response as it was, when the
// response cannot be taken over: then the caller goes on serving c. The
// response must have started with "Transfer-Encoding: identity", so that
// net/http neither chunks it nor expects to end it, and be flushed.
func (h *Handler) detach(w http.ResponseWriter, c *client) bool {
	if w.Header().Get("Content-Encoding") != "" {
		return false // an encoder compresses the response
	}
	// Caddy's wrappers are passed over: what they do (count bytes, arm
	// deadlines) would outlive the request they belong to.
	hj, ok := innermost(w).(http.Hijacker)
	if !ok {
		return false
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		h.logger.Debug("cannot take the connection over", zap.Error(err))
		return false
	}
	dc := &detachedConn{Conn: conn, raw: rawConnOf(conn)}
	if brw.Reader.Buffered() > 0 {
		c.cut(errClientSentData) // an EventSource sends nothing more
		conn.Close()
		c.s.leave(c)
		return true
	}
	if !c.s.attach(c, dc) { // the hub cut it meanwhile
		conn.Close()
		c.s.leave(c)
		return true
	}
	go c.watch()
	c.shard.wake()
	return true
}

// innermost returns the response writer that w wraps, through every
// layer that can be unwrapped.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// watch waits for a detached client to hang up, or for its connection to
// be closed under it, then removes it. An EventSource sends nothing after
// its request, so a byte from it ends it too.
func (c *client) watch() {
	defer c.s.reg.wg.Done()
	var b [1]byte
	_, err := c.conn.Read(b[:])
	for tries := 0; errors.Is(err, os.ErrDeadlineExceeded) && tries < 3; tries++ {
		// A read deadline that the server's request handling set after
		// the takeover: this connection is ours, and has none.
		if err = c.conn.SetReadDeadline(time.Time{}); err == nil {
			_, err = c.conn.Read(b[:])
		}
	}
	if err == nil {
		c.cut(errClientSentData)
	} else {
		c.cut(errClientGone)
	}
	c.conn.Close()
	c.shard.remove(c)
	c.s.leave(c)
	if c.cause == errSlowClient {
		c.s.logger.Warn("slow client cut", zap.Stringer("remote_addr", c.conn.RemoteAddr()))
	} else if ce := c.s.logger.Check(zap.DebugLevel, "client ended"); ce != nil {
		ce.Write(zap.Error(c.cause))
	}
}

// end cuts a detached client with cause and closes its connection, which
// ends its watch.
func (c *client) end(cause error) {
	c.cut(cause)
	c.conn.Close()
}

// endWithin closes a detached client's connection at a random moment
// within closeSpread, so that the clients of a closing stream or config do
// not all reconnect at once. Until then it is served as before.
func (c *client) endWithin(cause error) {
	time.AfterFunc(rand.N(closeSpread), func() { c.end(cause) })
}
