package ssefanout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"

	"go.uber.org/zap"
)

// This file is the upstream reader: the one connection per stream to the
// origin, read, parsed and published by one goroutine, and reconnected with
// a backoff when it ends.

// newUpstreamClient returns the HTTP client that streams use to reach the
// origin at the escaped base path basePath. It sets no overall timeout,
// since a stream never ends by design, but bounds each step of opening a
// connection.
func newUpstreamClient(basePath string) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   16,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			return checkRedirect(basePath, req, via)
		},
	}
}

// checkRedirect follows a redirect only within the origin (the same
// scheme, host and port) and within its base path, by the rule that holds
// request paths (withinBase). Elsewhere, the upstream request's header_up
// values and Last-Event-ID would go to a host or a path the config never
// named, and an https origin could be downgraded to http.
func checkRedirect(basePath string, req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	from := via[0].URL
	if req.URL.Scheme != from.Scheme || req.URL.Host != from.Host {
		return fmt.Errorf("origin redirected to %s://%s; only redirects within the origin are followed", req.URL.Scheme, req.URL.Host)
	}
	if !withinBase(basePath, req.URL.EscapedPath()) {
		return errors.New("origin redirected out of the upstream base path; only redirects within it are followed")
	}
	return nil
}

// upstream is a stream's one connection to the origin: its read loop, its
// backoff, where it resumes from (the stream's last event ID), what it
// drops as resent, and its state. It publishes what it reads through one
// method of its stream's (stream.publish).
type upstream struct {
	s        *stream
	url      string
	label    string      // url as logs and the admin API show it
	headerUp http.Header // sent on every upstream request
	received atomic.Uint64

	mu sync.Mutex // guards the fields below

	// Until the origin first answers with an event stream (live), what it
	// answered the stream's own request with instead is what its clients
	// are answered (awaitOpen): refusal, once the first attempt has
	// failed, which closes answered.
	live     bool
	answered chan struct{} // closed at the first attempt's outcome
	refusal  *originRefusal

	// The connection's state, for the admin API.
	state       string    // one of the state constants
	lastErr     string    // why the last connection failed; "" once one connects
	lastErrAt   time.Time // when it failed; zero once one connects
	connectedAt time.Time // when the current connection opened
	connects    int       // connections opened
}

// Upstream connection states.
const (
	stateConnecting = "connecting"
	stateConnected  = "connected"
	stateBackoff    = "backoff"
	stateStopped    = "stopped"
)

func newUpstream(s *stream, sr streamRequest) *upstream {
	return &upstream{
		s:        s,
		url:      sr.upstreamURL,
		label:    redactURL(sr.upstreamURL),
		headerUp: sr.headerUp,
		answered: make(chan struct{}),
		state:    stateConnecting,
	}
}

// upstreamStatus is the connection's state, for the admin API.
type upstreamStatus struct {
	state, lastErr         string
	lastErrAt, connectedAt time.Time
	connects               int
}

// status reports the connection's state.
func (u *upstream) status() upstreamStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	return upstreamStatus{u.state, u.lastErr, u.lastErrAt, u.connectedAt, u.connects}
}

// setState records the upstream connection's state; err may be nil.
func (u *upstream) setState(state string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.state = state
	switch state {
	case stateConnected:
		u.connectedAt = time.Now()
		u.connects++
		u.live, u.refusal = true, nil
		u.answerOnce()
		u.lastErr, u.lastErrAt = "", time.Time{} // an old failure is not this connection's state
	case stateBackoff, stateStopped:
		if err != nil {
			u.lastErr, u.lastErrAt = err.Error(), time.Now()
		}
	}
}

// refused records, for a stream that has never been live, what the origin
// answered its request with, for awaitOpen to answer clients with.
func (u *upstream) refused(ref *originRefusal) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.live {
		u.refusal = ref
		u.answerOnce()
	}
}

// answerOnce closes answered if it is still open. u.mu must be held.
func (u *upstream) answerOnce() {
	select {
	case <-u.answered:
	default:
		close(u.answered)
	}
}

// firstAnswerWait bounds how long a client of a stream that has never been
// live waits for the origin's first answer before it is served as any
// client is: an origin that takes longer to answer a stream's request with
// its head is one that is slow, not one that refused.
const firstAnswerWait = 10 * time.Second

// awaitFirstAnswers returns the first of ss, the streams a request
// joined, whose origin refused its request before it was ever live, with
// the refusal; nil if none did. It waits for the streams' first answers
// together, for at most firstAnswerWait in all: their requests are all
// under way once the request has joined them, so a page of several members
// waits no longer than a single stream's client.
func awaitFirstAnswers(ctx context.Context, ss []*stream) (*stream, *originRefusal) {
	ctx, cancel := context.WithTimeout(ctx, firstAnswerWait)
	defer cancel()
	for _, s := range ss {
		if ref := s.up.awaitOpen(ctx); ref != nil {
			return s, ref
		}
	}
	return nil, nil
}

// awaitOpen returns, for a stream that has never been live, what the origin
// refused the stream's own request with, waiting until ctx ends for its
// first answer if it has not come yet; nil once the stream has been live,
// or if no refusal came in that time. A client's own cursor plays no part
// in it: only the stream's request does.
func (u *upstream) awaitOpen(ctx context.Context) *originRefusal {
	u.mu.Lock()
	live := u.live
	u.mu.Unlock()
	if live {
		return nil
	}
	select {
	case <-u.answered:
	case <-u.s.done:
	case <-ctx.Done():
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.live {
		return nil
	}
	return u.refusal
}

// run keeps one connection to the origin open until ctx ends,
// reconnecting after each end or failure after a wait that grows with how
// long the origin has been failing (backoff.go). It makes one attempt at a
// time. An origin that answers 204 stops the stream: run then
// returns until when the stream's key must answer 204 too; otherwise the
// zero time.
func (u *upstream) run(ctx context.Context) (stopUntil time.Time) {
	s := u.s
	b := newBackoff()
	for {
		delivered, err := u.readOnce(ctx, b)
		if ctx.Err() != nil {
			return time.Time{}
		}
		if errors.Is(err, errOriginStopped) {
			u.refused(&originRefusal{status: http.StatusNoContent})
			u.setState(stateStopped, err)
			until := time.Now().Add(u.stopPeriod())
			s.logger.Info("origin answered 204; stopping the stream", zap.Time("until", until))
			return until
		}
		floor, ceiling := backoffBounds(s.hub.settings.Load(), s.signals.originRetry.Load())
		wait := b.ended(delivered, floor, ceiling)
		u.refused(refusalOf(err, time.Now().Add(wait)))
		u.setState(stateBackoff, err)
		if errors.Is(err, io.EOF) {
			s.logger.Info("upstream ended; reconnecting", zap.Duration("backoff", wait))
		} else {
			s.hub.metrics.upstreamErrors.Inc()
			level := zap.WarnLevel
			if errors.Is(err, errLoop) {
				level = zap.ErrorLevel // the config's, and it will not pass
			}
			s.logger.Log(level, "upstream failed; reconnecting",
				zap.String("upstream", u.label),
				zap.Error(err),
				zap.Duration("backoff", wait))
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return time.Time{}
		case <-timer.C:
		}
		u.setState(stateConnecting, nil)
	}
}

// stopPeriod is how long a stream stays stopped after the origin's 204:
// its retry time or a minute, whichever is longer, so that browsers give up
// as they would at the origin.
func (u *upstream) stopPeriod() time.Duration {
	s := u.s
	retry := s.hub.settings.Load().retry
	if retry < 0 {
		retry = s.signals.originRetry.Load()
	}
	return max(time.Duration(retry)*time.Millisecond, time.Minute)
}

// readOnce makes one upstream request and publishes what it reads until the
// response ends. It reports whether at least one block was delivered. Once
// the origin has sent ids, the request resumes after the last one, and
// what the origin sends again that the buffer already holds is dropped
// (see resend). It tells b when the origin answers with a stream.
func (u *upstream) readOnce(ctx context.Context, b *backoff) (delivered bool, err error) {
	s := u.s
	s.ring.mu.RLock()
	lastID, hasLastID := s.ring.lastID()
	fresh := s.ring.head == 0
	s.ring.mu.RUnlock()
	// Only an id the origin sent is ever asked for: a client's cursor is
	// its own (its catch-up, catchup.go), never the stream's. An empty one
	// (the origin reset it) is not sent, as a browser does not send it.
	resumeID, resuming := lastID, hasLastID && lastID != ""

	cfg := s.hub.settings.Load()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	resp, err := u.open(ctx, cfg, resumeID, resuming)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	b.connected()
	u.setState(stateConnected, nil)
	s.hub.metrics.upstreamConnects.Inc()
	body := io.Reader(resp.Body)
	if cfg.upstreamWait > 0 {
		watchdog := newSilenceWatchdog(resp.Body, cfg.upstreamWait, cancel)
		defer watchdog.stop()
		body = watchdog
	}
	s.logger.Info("upstream connected", zap.String("upstream", u.label))

	p := newOriginParser(body, cfg)
	fromTier := tierOf(resp.Header) != ""
	if hasLastID {
		p.SetLastID(lastID) // only an id the origin sent carries over
	}
	rs := resend{checking: !fresh}
	first := true // no block read yet but retry times
	for {
		ev, err := p.Next()
		if err != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errUpstreamSilent) {
				err = fmt.Errorf("%w for %v", cause, cfg.upstreamWait)
			}
			if errors.Is(err, sse.ErrEventTooLarge) {
				err = fmt.Errorf("%w: over max_event_size (%d bytes)", err, cfg.maxEventSize)
			}
			return delivered, err
		}
		marker := fromTier && resuming && u.tierStale(&ev, first)
		first = first && ev.RetryOnly()
		if marker {
			continue
		}
		if s.publish(&ev, &rs) {
			u.received.Add(1)
			delivered = true
		}
	}
}

// newOriginParser returns the parser of an origin's answer, the shared
// stream's and a catch-up's alike. It refuses an event over max_event_size
// and an id over maxCursorLen: no client could resume from such an id (its
// cursor would be refused), and it would be repeated in every later frame
// to every client. Either ends the connection, and the event is never
// delivered.
func newOriginParser(r io.Reader, cfg *settings) *sse.Parser {
	p := sse.NewParser(r, cfg.maxEventSize)
	p.SetMaxIDLen(maxCursorLen)
	return p
}

// resend tracks, on a reconnected upstream, whether the origin is sending
// again what the buffer already holds, as an origin that ignores
// Last-Event-ID, or resumes from further back, does.
//
// An event is a resend only if it is the same event (id and content) as
// the one the buffer holds at that place in the sequence: the first event
// of the connection matched anywhere in the buffer (the newest match),
// each later one matched against the frame after the last. The first
// event that differs ends the check, and so does reaching the newest
// frame: from then on everything is new. So an origin that reuses ids
// (the same id on every event, cycling ids, counting again from 1 after a
// restart) loses nothing: its new events differ in content or place.
type resend struct {
	checking bool
	next     uint64 // seq of the frame the next event must equal; 0 before the first match
}

// drops reports whether f is a resend of what the ring r holds, to be
// dropped; it is asked only while rs.checking. Only the upstream reader
// calls it, so the ring's head does not move while it checks.
func (rs *resend) drops(r *ring, f *frame) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if rs.next == 0 {
		seq, ok := r.findFrame(f, len(r.slots))
		rs.next = seq
		if !ok {
			rs.checking = false
			return false
		}
	} else if held := r.get(rs.next); held == nil || !held.sameEvent(f) {
		rs.checking = false
		return false
	}
	rs.next++
	rs.checking = rs.next <= r.head
	return true
}

// open requests the stream from the origin, with Last-Event-ID when
// hasLastEventID is set, and checks that the answer is an event stream. A
// 204 answer is errOriginStopped.
func (u *upstream) open(ctx context.Context, cfg *settings, lastEventID string, hasLastEventID bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.url, nil)
	if err != nil {
		return nil, fmt.Errorf("making upstream request: %w", err)
	}
	for name, values := range u.headerUp {
		req.Header[name] = values
	}
	req.Header["Via"] = append(slices.Clip(req.Header["Via"]), cfg.via) // shared with headerUp: clipped, so never written into
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if hasLastEventID {
		req.Header.Set("Last-Event-ID", lastEventID)
	}

	resp, err := u.s.hub.upstream.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its text holds the URL, and so any user name
		}
		return nil, fmt.Errorf("connecting upstream: %w", err)
	}
	if err := u.answeredFrom(resp); err != nil {
		resp.Body.Close()
		return nil, err
	}
	if resp.StatusCode == http.StatusNoContent {
		resp.Body.Close()
		return nil, errOriginStopped
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, &originStatusError{code: resp.StatusCode}
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: origin answered Content-Type %q", errNotEventStream, resp.Header.Get("Content-Type"))
	}
	// The transport asks for gzip and decodes it (the header is then gone);
	// a body in any other coding would be read as text and its bytes sent
	// to clients as events, so it is refused as a wrong Content-Type is.
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		resp.Body.Close()
		return nil, fmt.Errorf("origin answered Content-Encoding %q, which was not asked for", ce)
	}
	return resp, nil
}

// errUpstreamSilent ends an upstream connection that sent nothing for
// upstream_timeout.
var errUpstreamSilent = errors.New("upstream sent nothing")

// silenceWatchdog is an io.Reader that cancels the upstream request when
// no byte arrives for its timeout: a connection that hangs without closing
// would otherwise hold the stream forever. Comments count as bytes.
type silenceWatchdog struct {
	r       io.Reader
	timeout time.Duration
	timer   *time.Timer
}

func newSilenceWatchdog(r io.Reader, timeout time.Duration, cancel context.CancelCauseFunc) *silenceWatchdog {
	return &silenceWatchdog{
		r:       r,
		timeout: timeout,
		timer:   time.AfterFunc(timeout, func() { cancel(errUpstreamSilent) }),
	}
}

func (w *silenceWatchdog) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 {
		w.timer.Reset(w.timeout)
	}
	return n, err
}

func (w *silenceWatchdog) stop() { w.timer.Stop() }

// originStatusError is an origin's answer with a status other than 200
// or 204. It shows the status with its standard text, not the origin's
// reason phrase, which goes nowhere.
type originStatusError struct{ code int }

func (e *originStatusError) Error() string { return "origin answered " + e.status() }

// status is the status code and its standard text, such as "404 Not Found".
func (e *originStatusError) status() string {
	return strings.TrimSpace(strconv.Itoa(e.code) + " " + http.StatusText(e.code))
}

// errNotEventStream is an origin's 200 answer that is not an event stream.
var errNotEventStream = errors.New("not text/event-stream")

// originRefusal is what the clients of a stream that has never been live
// are answered instead of an event stream, from the origin's answer to the
// stream's own request: what reverse_proxy would answer them.
type originRefusal struct {
	status  int       // the status clients get
	reason  string    // a short text that says why; nothing the origin sent but its status
	retryAt time.Time // when the stream tries the origin again; zero: no Retry-After
}

// refusalOf maps why an attempt to open the stream failed to what its
// clients are answered while it has never been live: an origin's 4xx is
// passed through; its 503 stays 503; any other status, a network error or
// an answer that is not an event stream is 502. Those that may pass (5xx,
// 429) say when to come back: when the stream tries again.
func refusalOf(err error, next time.Time) *originRefusal {
	var se *originStatusError
	switch {
	case errors.As(err, &se) && se.code >= 400 && se.code < 500:
		ref := &originRefusal{status: se.code, reason: "the origin answered the stream's request with " + se.status()}
		if se.code == http.StatusTooManyRequests {
			ref.retryAt = next
		}
		return ref
	case errors.As(err, &se) && se.code == http.StatusServiceUnavailable:
		return &originRefusal{status: se.code, reason: "the origin is unavailable (" + se.status() + ")", retryAt: next}
	case errors.As(err, &se):
		return &originRefusal{status: http.StatusBadGateway, reason: "the origin answered the stream's request with " + se.status(), retryAt: next}
	case errors.Is(err, errNotEventStream):
		return &originRefusal{status: http.StatusBadGateway, reason: "the origin did not answer with an event stream", retryAt: next}
	default:
		return &originRefusal{status: http.StatusBadGateway, reason: "the origin could not be reached", retryAt: next}
	}
}
