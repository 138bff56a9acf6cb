package e2e

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// This file is a test-only Caddy handler, sse_probe, that records what
// reaches Caddy from a client: the protocol, the client's address and port,
// the request headers, and the status the next handler answered. The tests
// use it to see what a browser or a library sent (its Last-Event-ID), that
// a client has joined its stream (sse_fanout answers only after joining),
// and which connection and protocol carried each request.
//
// It is used inside a route block, which keeps it in front of sse_fanout:
//
//	route /s/* {
//		sse_probe <name>
//		sse_fanout <origin>
//	}

func init() {
	caddy.RegisterModule(probeHandler{})
	httpcaddyfile.RegisterHandlerDirective("sse_probe", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		p := new(probeHandler)
		h.Next() // consume directive name
		if !h.AllArgs(&p.Name) {
			return nil, h.ArgErr()
		}
		return p, nil
	})
}

// probeHandler records each request in the probe registered under Name,
// if there is one, and passes it on.
type probeHandler struct {
	Name string `json:"name,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (probeHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse_fanout_test_probe",
		New: func() caddy.Module { return new(probeHandler) },
	}
}

func (p *probeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	pr := probeNamed(p.Name)
	if pr == nil {
		return next.ServeHTTP(w, r)
	}
	i := pr.add(r)
	return next.ServeHTTP(&probeWriter{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		answer:                func(status int, h http.Header) { pr.answered(i, status, h.Get("Content-Encoding")) },
	}, r)
}

// probeWriter reports the status of a response, and its header, when its
// header is written.
type probeWriter struct {
	*caddyhttp.ResponseWriterWrapper
	answer func(status int, header http.Header)
	once   sync.Once
}

func (w *probeWriter) WriteHeader(status int) {
	w.once.Do(func() { w.answer(status, w.Header()) })
	w.ResponseWriterWrapper.WriteHeader(status)
}

func (w *probeWriter) Write(b []byte) (int, error) {
	w.once.Do(func() { w.answer(http.StatusOK, w.Header()) })
	return w.ResponseWriterWrapper.Write(b)
}

// probeRequest is one request as Caddy received it.
type probeRequest struct {
	Method     string // GET, or OPTIONS for a CORS preflight
	URI        string
	Proto      string // HTTP/1.1, HTTP/2.0 or HTTP/3.0
	RemoteAddr string // the client's address and port: one per connection
	Header     http.Header
	Status     int    // the status answered; 0 until the header is written
	Encoding   string // the answer's Content-Encoding
}

// probe is what one test's sse_probe handlers recorded.
type probe struct {
	mu      sync.Mutex
	reqs    []probeRequest
	changed chan struct{} // closed and replaced on every change
}

var (
	probesMu sync.Mutex
	probes   = make(map[string]*probe)
)

// newProbe registers a probe under name for the test's lifetime.
func newProbe(t *testing.T, name string) *probe {
	t.Helper()
	p := &probe{changed: make(chan struct{})}
	probesMu.Lock()
	probes[name] = p
	probesMu.Unlock()
	t.Cleanup(func() {
		probesMu.Lock()
		delete(probes, name)
		probesMu.Unlock()
	})
	return p
}

func probeNamed(name string) *probe {
	probesMu.Lock()
	defer probesMu.Unlock()
	return probes[name]
}

func (p *probe) add(r *http.Request) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs = append(p.reqs, probeRequest{
		Method:     r.Method,
		URI:        r.RequestURI,
		Proto:      r.Proto,
		RemoteAddr: r.RemoteAddr,
		Header:     r.Header.Clone(),
	})
	p.notifyLocked()
	return len(p.reqs) - 1
}

func (p *probe) answered(i, status int, encoding string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs[i].Status, p.reqs[i].Encoding = status, encoding
	p.notifyLocked()
}

func (p *probe) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// requests returns a copy of what was recorded so far.
func (p *probe) requests() []probeRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]probeRequest(nil), p.reqs...)
}

// waitFor waits until cond holds for the recorded requests and returns them.
func (p *probe) waitFor(t *testing.T, what string, cond func([]probeRequest) bool) []probeRequest {
	t.Helper()
	deadline := time.NewTimer(testkit.WaitTimeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		reqs := append([]probeRequest(nil), p.reqs...)
		changed := p.changed
		p.mu.Unlock()
		if cond(reqs) {
			return reqs
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("waiting for %s: timed out; Caddy saw %d requests: %+v", what, len(reqs), reqs)
		}
	}
}

// waitAnswered waits until n requests were answered with 200.
func (p *probe) waitAnswered(t *testing.T, n int) []probeRequest {
	t.Helper()
	return p.waitFor(t, "answered requests", func(reqs []probeRequest) bool {
		return countAnswered(reqs, http.StatusOK) >= n
	})
}

// countAnswered counts the requests answered with status.
func countAnswered(reqs []probeRequest, status int) int {
	n := 0
	for _, r := range reqs {
		if r.Status == status {
			n++
		}
	}
	return n
}
