package ssefanout

// This file is a request's way through the handler: from the request to
// its stream, then the head of its response, what its cursor asks for, and
// its writer, in its request goroutine or, once detached, a shared one.

import (
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// ServeHTTP serves a GET request as a client of its stream and hands any
// other request to next.
//
// Everything before the client's live events (finding its stream, the
// head of its response, its catch-up and replay, detaching) runs on a
// goroutine of its own, start's, and the request goroutine only waits for
// it, then writes the live events. A client served in its request
// (HTTP/2, HTTP/3) keeps its request goroutine for as long as it stays,
// and Caddy's handler chain leaves little of that goroutine's first 8 KiB
// of stack: any deeper call of ours would double the stack, for as long
// as the client stays (docs/performance.md, Where we stand). start's goroutine ends
// with start, and its stack with it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.Method != http.MethodGet {
		return next.ServeHTTP(w, r)
	}
	var l live
	onOwnStack(func() { l = h.start(w, r) })
	if l.rw == nil {
		return nil
	}
	err := l.rw.serve(r.Context(), l.x)
	l.cs[0].abort.Store(nil)
	if err == nil {
		err = errClientGone // serve's nil: it hung up
	}
	for i, c := range l.cs {
		l.ss[i].leave(c)
		ended(l.ss[i], c, err)
	}
	return nil
}

// live is what start leaves to its request goroutine, to be written its
// live events by rw: a client of its stream, or a multiplexed request's
// members, each a client of its stream (mux.go), with x what rw serves.
type live struct {
	ss []*stream
	cs []*client
	x  served
	rw *respWriter
}

// onOwnStack runs f on a goroutine of its own and waits for it. A panic
// in f is raised again in the caller, as if f had run there.
func onOwnStack(f func()) {
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		f()
	}()
	if p := <-done; p != nil {
		panic(p)
	}
}

// start admits r as a client of its stream and sends it everything before
// its live events. It returns the client if its request goroutine is to
// write its live events; otherwise none: the request was refused, the
// client has ended, or it was detached.
//
// Nothing of a GET request returns an error to Caddy, which would log the
// request with its URI, a query token and all: a refusal is answered by
// refuse, and why a client ended is logged by ended.
func (h *Handler) start(w http.ResponseWriter, r *http.Request) live {
	l := h.admit(w, r)
	ss, cs := l.ss, l.cs
	if ss == nil {
		return live{}
	}
	// A tier below (an sse_fanout node reading from this one) is answered
	// at once, as before the stream was ever live: a loop of tiers is
	// found from their answers (tier.go), which a tier waiting for its
	// upstream's first answer would never give.
	if len(cs[0].via) == 0 {
		if s, ref := awaitFirstAnswers(r.Context(), ss); ref != nil {
			leaveAll(ss, cs)
			if ce := h.logger.Check(zap.DebugLevel, "client refused: the stream has never been live"); ce != nil {
				ce.Write(zap.String("stream", s.label), zap.Int("status", ref.status))
			}
			refuseAsOrigin(w, ref)
			return live{}
		}
	}
	rw, err := h.startStream(w, r, l)
	if rw == nil {
		for i, c := range cs {
			ended(ss[i], c, err)
		}
		return live{}
	}
	l.rw = rw
	return l
}

// leaveAll has each client cs[i] leave its stream ss[i].
func leaveAll(ss []*stream, cs []*client) {
	for i, c := range cs {
		ss[i].leave(c)
	}
}

// admit finds the streams r asks for and joins each as a new client: its
// own, or, for a multiplexed request, each member's, which from then on a
// muxClient serves. It returns them with what serves them, without a
// writer yet. Or it answers r with a refusal and returns no stream.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) live {
	w.Header().Add("Via", h.cfg.via)
	if h.cors != nil {
		h.cors.apply(w.Header(), r) // on refusals too, so that the page sees them
	}
	srs, names, err := h.requests.requestsOf(r)
	var ss []*stream
	var cs []*client
	status := http.StatusBadRequest
	label := ""
	if err == nil {
		enc := h.encodingFor(w, r)
		joinEnc := enc
		if names != nil {
			joinEnc = nil // a page's members are compressed by the page (newMuxClient)
		}
		if !h.adopted.Load() {
			h.reg.adopt(h.stop, h.cfg) // this handler's config is running
			h.adopted.Store(true)
		}
		for i, sr := range srs {
			label = sr.label
			sr.encoding = joinEnc
			sr.pageMember = names != nil && i > 0
			var s *stream
			var c *client
			if s, c, err = h.reg.join(sr, h.cfg, h.stop); err != nil {
				break
			}
			ss, cs = append(ss, s), append(cs, c)
		}
		if err == nil && names == nil {
			return live{ss: ss, cs: cs, x: cs[0]}
		}
		if err == nil {
			ids := make([]string, len(srs))
			for i, sr := range srs {
				ids[i] = string(sr.cursor) // "" without one; a member's part until it is sent an id
			}
			return live{ss: ss, cs: cs, x: newMuxClient(names, ids, cs, enc)}
		}
		leaveAll(ss, cs) // the members that joined before one was refused
		status = http.StatusServiceUnavailable
		switch {
		case errors.Is(err, errOriginStopped):
			w.WriteHeader(http.StatusNoContent) // as the origin said: browsers stop
			return live{}
		case errors.Is(err, errLoop):
			h.reg.metrics.refusedLoop.Inc()
			status = http.StatusLoopDetected
		case errors.Is(err, errStreamFull):
			h.reg.metrics.refusedFull.Inc()
		case errors.Is(err, errTooManyStreams):
			h.reg.metrics.refusedStreams.Inc()
		}
	} else {
		switch {
		case errors.Is(err, errStreamURLTooLong):
			status = http.StatusRequestURITooLong
		case errors.Is(err, errKeyValueTooLong):
			status = http.StatusRequestHeaderFieldsTooLarge
		}
		if len(srs) == 1 {
			label = srs[0].label
		}
	}
	// What clients cause is logged at debug level, so that they cannot
	// flood the log; the metrics count it. The stream shows as its label,
	// never as the request's URI.
	if ce := h.logger.Check(zap.DebugLevel, "client refused"); ce != nil {
		ce.Write(zap.String("stream", label), zap.Int("status", status), zap.Error(err))
	}
	refuse(w, status, err.Error())
	return live{}
}

// refuse answers a request that the handler does not serve as a client
// with status and a short text that says why. Every refusal goes through
// it, and the handler then returns nil to Caddy: a handler error would
// make Caddy log the request, with its URI (a query token and all), on
// its error log. A 503 says when to come back. The reason must hold
// nothing the client sent.
//
// A refusal may come after the head of the event stream went to a layer
// in front that buffers it (startStream): the headers are still this
// response's, and become a refusal's; the status is the one that layer
// already holds.
func refuse(w http.ResponseWriter, status int, reason string) {
	header := w.Header()
	for _, name := range []string{"Cache-Control", "Content-Encoding", "Content-Length", "Transfer-Encoding", "X-Accel-Buffering"} {
		header.Del(name) // an event stream's, set before a late refusal
	}
	header.Set("Content-Type", "text/plain; charset=utf-8")
	header.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusServiceUnavailable && header.Get("Retry-After") == "" {
		header.Set("Retry-After", retryAfter())
	}
	w.WriteHeader(status)
	io.WriteString(w, reason+"\n")
}

// refuseAsOrigin answers a client of a stream that has never been live with
// what the origin answered the stream's request with (refusalOf): 204 as
// it is, so that a browser stops as it would at the origin; otherwise a
// refusal that says when the stream tries the origin again, if it may
// pass.
func refuseAsOrigin(w http.ResponseWriter, ref *originRefusal) {
	if ref.status == http.StatusNoContent {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if !ref.retryAt.IsZero() {
		seconds := int(math.Ceil(time.Until(ref.retryAt).Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(max(1, seconds)))
	}
	refuse(w, ref.status, ref.reason)
}

// startStream answers the request of l.x, whose clients are l.cs, each a
// client of the stream l.ss[i] (one, or a multiplexed request's members),
// with the start of its event stream: the head and, at once, the first
// bytes of the body (respWriter.open), what each cursor asks for and each
// replay. It returns their writer if they are to be written their live
// events in their request. Otherwise they have left their streams, and
// the error says why, unless they were detached: a shared writer serves
// them from now on, a multiplexed request's members as one.
func (h *Handler) startStream(w http.ResponseWriter, r *http.Request, l live) (*respWriter, error) {
	ss, cs := l.ss, l.cs
	c := cs[0]
	peer := peerFields(r)
	for _, c := range cs {
		c.peer = peer
	}
	header := w.Header()
	header.Set("Content-Type", "text/event-stream")
	header.Set("Cache-Control", "no-cache")
	header.Set("X-Accel-Buffering", "no") // tells a buffering proxy in front to pass events on
	header.Del("Content-Length")
	h.setEncodingHeaders(header, c.encoding())
	// An HTTP/1.x client, over TLS or not, may be detached once its
	// response has started; whether it is, passesThrough decides.
	mayDetach := h.detachable && r.ProtoMajor == 1
	if mayDetach {
		// The body ends when the connection closes, as the SSE spec
		// suggests, instead of in chunks: so once the connection is taken
		// over, frames go on the wire as they are.
		header.Set("Transfer-Encoding", "identity")
	}
	rc := http.NewResponseController(w)
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		// A GET that announces a body (an EventSource never does): net/http
		// would read it before the head goes out, and wait for as long as
		// the client holds it back, the client counted in its stream all
		// the while. Left unread, it is bytes after the request, which cut
		// a detached client (detach.go).
		_ = rc.EnableFullDuplex()
	}
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		leaveAll(ss, cs)
		if !errors.Is(err, http.ErrNotSupported) {
			// The client left as its response started (an HTTP/2 stream
			// reset, a closed connection): its own affair, logged where
			// every client's end is, so that clients cannot flood the log.
			return nil, err
		}
		h.logger.Error("response cannot be flushed, so events cannot stream", zap.Error(err))
		return nil, nil
	}
	if responseBuffered(w) {
		// The head has not reached the client, and would not before the
		// response ends: a stream that never ends would be held in memory.
		leaveAll(ss, cs)
		h.logger.Error("a handler before sse_fanout buffers the response, so events cannot stream; remove it from this route (log_append with {http.response.body}, or intercept that handles every response)")
		refuse(w, http.StatusInternalServerError, errResponseBuffered.Error()+", so events cannot stream")
		return nil, nil
	}

	past := passesThrough(w, r, c.encoding())
	rw := newRespWriter(w, rc, h.cfg.writeTimeout, past, !past && ownDeadlines(w), cs)
	err := rw.open(c)
	for i := 0; i < len(cs) && err == nil; i++ {
		err = ss[i].catchUps.resume(r.Context(), cs[i], rw)
	}
	if err == nil {
		err = rw.send(l.x) // the replay
	}
	if err == nil && !(mayDetach && past && detach(w, l.x, ss, cs)) {
		for i, c := range cs {
			ss[i].logStarted(c, false)
		}
		return rw, nil
	}
	// The writer and the response it holds are not the client's any
	// more: a detached client must not keep them.
	c.abort.Store(nil)
	if err != nil {
		leaveAll(ss, cs)
	}
	return nil, err
}

// ended logs why c, a client of s served in its request, ended, if it
// did (stream.logEnded).
func ended(s *stream, c *client, err error) {
	if err != nil {
		s.logEnded(c, err, false)
	}
}

// peerFields name r's client in its log lines (stream.logStarted), as
// Caddy's access log names them (caddyhttp.LoggableHTTPRequest): its
// address, the client IP Caddy found behind trusted proxies, and its
// protocol. Nothing else of the request, whose URI, headers and cookies
// may hold credentials.
func peerFields(r *http.Request) []zap.Field {
	ip, port, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip, port = r.RemoteAddr, ""
	}
	fields := []zap.Field{zap.String("remote_ip", ip), zap.String("remote_port", port)}
	if clientIP, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok {
		fields = append(fields, zap.String("client_ip", clientIP))
	}
	return append(fields, zap.String("proto", r.Proto))
}

// passesThrough reports whether nothing in w's writer chain needs the
// response's bytes, so that they may be written past it (respWriter) or
// the connection taken over (detach.go): no encoder compresses them (the
// Content-Encoding, if any, is own: the one sse_fanout compresses in), no
// layer holds them back (see responseBuffered), and the server has no hard
// write_timeout, which the chain enforces. It must be asked once the head
// is written.
func passesThrough(w http.ResponseWriter, r *http.Request, own *encoding) bool {
	ownName := ""
	if own != nil {
		ownName = own.name
	}
	if w.Header().Get("Content-Encoding") != ownName || responseBuffered(w) {
		return false
	}
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return ok && srv.WriteTimeout <= 0
}

// responseBuffered reports whether some layer of w's chain holds the
// response back instead of passing it on, as Caddy's response recorder
// does for log_append {http.response.body} or an intercept that handles
// the response. It must be asked after the header is written, since a
// recorder decides then.
func responseBuffered(w http.ResponseWriter) bool {
	return slices.ContainsFunc(layers(w), func(w http.ResponseWriter) bool {
		b, ok := w.(interface{ Buffered() bool })
		return ok && b.Buffered()
	})
}

// ownDeadlines reports whether the client's writes need deadlines of our
// own: not when Caddy's write_idle_timeout (1 minute by default) already
// bounds every write and flush of the response, which is cheaper.
func ownDeadlines(w http.ResponseWriter) bool {
	return !slices.ContainsFunc(layers(w), func(w http.ResponseWriter) bool {
		_, ok := w.(*caddyhttp.IdleTimeoutWriter)
		return ok
	})
}
