package sseorigin

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// maxBatch is about how many bytes of queued events go out in one write.
const maxBatch = 64 << 10

// ServeHTTP serves the counters as JSON on /stats (see Stats), and the
// event stream on Options.Path and below; other paths are not found. It
// takes no method but GET.
//
// An event stream starts with the Preamble and the kept events after the
// request's Last-Event-ID, then goes on with each event as it is
// published, until the client goes away, the connection falls more than
// Queue events behind, or the origin is closed. Events that queued up
// meanwhile go out in one write.
func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	stats := r.URL.Path == "/stats"
	if !stats && !o.servesPath(r.URL.Path) {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if stats {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		_ = json.NewEncoder(w).Encode(o.Stats())
		return
	}
	o.serveEvents(w, r)
}

// servesPath reports whether the event stream is served on path.
func (o *Origin) servesPath(path string) bool {
	base := o.opts.Path
	return base == "" || path == base || strings.HasPrefix(path, base+"/")
}

// serveEvents streams events to one connection until it ends.
func (o *Origin) serveEvents(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64)
	replay, ch := o.subscribe(after)
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
	stream := r.URL.RequestURI()
	buf := append(make([]byte, 0, 4096), o.opts.Preamble...)
	for _, ev := range replay {
		buf = ev.AppendWire(buf, stream)
	}
	for open := true; send(w, rc, buf) && open; {
		buf, open = next(r.Context(), ch, buf[:0], stream)
	}
}

// send writes buf, if it holds anything, and flushes. It reports whether
// both worked.
func send(w http.ResponseWriter, rc *http.ResponseController, buf []byte) bool {
	if len(buf) > 0 {
		if _, err := w.Write(buf); err != nil {
			return false
		}
	}
	return rc.Flush() == nil
}

// next waits for the next event on ch and appends it to buf, with those
// queued behind it up to about maxBatch bytes. It reports false when ch is
// closed (the origin closed, or the connection fell behind) or ctx ends;
// buf then holds what is left to send, if anything.
func next(ctx context.Context, ch <-chan Event, buf []byte, stream string) ([]byte, bool) {
	select {
	case <-ctx.Done():
		return buf, false
	case ev, ok := <-ch:
		if !ok {
			return buf, false
		}
		buf = ev.AppendWire(buf, stream)
	}
	for len(buf) < maxBatch {
		select {
		case ev, ok := <-ch:
			if !ok {
				return buf, false
			}
			buf = ev.AppendWire(buf, stream)
		default:
			return buf, true
		}
	}
	return buf, true
}
