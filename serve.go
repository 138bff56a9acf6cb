package ssefanout

// This file is a request's way through the handler: from the request to
// its stream, then the head of its response, what its cursor asks for, and
// its writer, in its request goroutine or, once detached, a shared one.

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// ServeHTTP serves a GET request as a client of its stream and hands any
// other request to next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.Method != http.MethodGet {
		return next.ServeHTTP(w, r)
	}
	w.Header().Add("Via", h.cfg.via)
	if h.cors != nil {
		h.cors.apply(w.Header(), r) // on refusals too, so that the page sees them
	}
	sr, err := h.requests.streamRequestOf(r)
	if err != nil {
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	sr.encoding = h.encodingFor(w, r)
	h.reg.adopt(h.cfg, h.gen) // this handler's config is running
	s, c, err := h.reg.join(sr, h.stop)
	switch {
	case errors.Is(err, errOriginStopped):
		w.WriteHeader(http.StatusNoContent) // as the origin said: browsers stop
		return nil
	case errors.Is(err, errLoop):
		h.reg.metrics.refusedLoop.Inc()
		if ce := h.logger.Check(zap.DebugLevel, "client refused"); ce != nil {
			ce.Write(zap.String("stream", sr.label), zap.Error(err))
		}
		return caddyhttp.Error(http.StatusLoopDetected, err)
	case errors.Is(err, errStreamFull), errors.Is(err, errTooManyStreams):
		if errors.Is(err, errStreamFull) {
			h.reg.metrics.refusedFull.Inc()
		} else {
			h.reg.metrics.refusedStreams.Inc()
		}
		w.Header().Set("Retry-After", retryAfter())
		if ce := h.logger.Check(zap.DebugLevel, "client refused"); ce != nil {
			ce.Write(zap.String("stream", sr.label), zap.Error(err))
		}
		return caddyhttp.Error(http.StatusServiceUnavailable, err)
	case err != nil:
		return caddyhttp.Error(http.StatusServiceUnavailable, err)
	}
	err = h.serveStream(w, r, s, c)
	switch {
	case errors.Is(err, errResponseBuffered):
		return caddyhttp.Error(http.StatusInternalServerError, err)
	case errors.Is(err, errSlowClient):
		h.logger.Warn("slow client cut", zap.String("stream", sr.label), zap.String("remote_addr", r.RemoteAddr))
	case err != nil:
		if ce := h.logger.Check(zap.DebugLevel, "client ended"); ce != nil {
			ce.Write(zap.String("stream", sr.label), zap.Error(err))
		}
	}
	return nil
}

// serveStream answers c's request with its event stream: the head, what its
// cursor asks for, then its frames as they come, from this goroutine or,
// once detached, from a shared writer. It returns why c ended, unless it
// was detached.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, s *stream, c *client) error {
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
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		s.leave(c, false)
		h.logger.Error("response cannot be flushed, so events cannot stream", zap.Error(err))
		return nil
	}
	if responseBuffered(w) {
		// The head has not reached the client, and would not before the
		// response ends: a stream that never ends would be held in memory.
		s.leave(c, false)
		h.logger.Error("a handler before sse_fanout buffers the response, so events cannot stream; remove it from this route (log_append with {http.response.body}, or intercept that handles every response)")
		return errResponseBuffered
	}

	past := passesThrough(w, r, c.encoding())
	rw := newRespWriter(w, rc, h.cfg.writeTimeout, past, c)
	// Whatever follows, the writer and the response it holds are not the
	// client's once this returns: a detached client must not keep them.
	defer c.abort.Store(nil)
	err := s.resume(r.Context(), c, rw)
	if err == nil {
		err = rw.send(c) // the replay, in this goroutine
	}
	if err == nil && mayDetach && past && detach(w, s, c) {
		return nil // the client is served by a shared writer from now on
	}
	if err == nil {
		err = rw.serve(r.Context(), c)
	}
	s.leave(c, false)
	return err
}
