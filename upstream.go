package ssefanout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// This file is the upstream reader: the one connection per stream to the
// origin, read, parsed and published by one goroutine, and reconnected with
// a backoff when it ends.

const (
	// backoffMin is the shortest wait before reconnecting, whatever the
	// origin's retry says, so that no origin can make us loop hot.
	backoffMin = 250 * time.Millisecond
	// backoffDefault is the base wait when the origin sent no retry.
	backoffDefault = time.Second
	// backoffMax caps the exponential growth.
	backoffMax = 30 * time.Second
)

// newUpstreamClient returns the HTTP client that streams use to reach the
// origin. It sets no overall timeout, since a stream never ends by design,
// but bounds each step of opening a connection.
func newUpstreamClient() *http.Client {
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
		// An origin that redirects is followed, as an EventSource would.
	}
}

// readUpstream keeps one connection to the origin open until ctx ends,
// reconnecting after each end or failure with a growing, jittered backoff.
func (s *stream) readUpstream(ctx context.Context) {
	failures := 0
	for {
		delivered, err := s.readOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if delivered {
			failures = 0 // a healthy connection resets the backoff
		}
		wait := s.backoff(failures)
		failures++
		if errors.Is(err, io.EOF) {
			s.logger.Info("upstream ended; reconnecting", zap.Duration("backoff", wait))
		} else {
			s.logger.Warn("upstream failed; reconnecting",
				zap.String("upstream", s.upstreamURL),
				zap.Error(err),
				zap.Duration("backoff", wait))
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// backoff returns how long to wait after the given number of consecutive
// failures: the origin's retry (or a default) doubled per failure, capped,
// and jittered down by up to half so that streams do not reconnect in step.
func (s *stream) backoff(failures int) time.Duration {
	base := backoffDefault
	if ms := s.originRetry.Load(); ms >= 0 {
		base = time.Duration(ms) * time.Millisecond
	}
	base = max(base, backoffMin)
	wait := base
	for i := 0; i < failures && wait < backoffMax; i++ {
		wait *= 2
	}
	wait = min(wait, backoffMax)
	return wait/2 + rand.N(wait/2+1)
}

// readOnce makes one upstream request and publishes what it reads until the
// response ends. It reports whether at least one block was delivered.
func (s *stream) readOnce(ctx context.Context) (delivered bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.upstreamURL, nil)
	if err != nil {
		return false, fmt.Errorf("making upstream request: %w", err)
	}
	cfg := s.reg.settings.Load()
	for name, values := range cfg.headerUp {
		req.Header[name] = values
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")

	resp, err := s.reg.upstream.Do(req)
	if err != nil {
		return false, fmt.Errorf("connecting upstream: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("origin answered %s", resp.Status)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return false, fmt.Errorf("origin answered Content-Type %q, not text/event-stream", resp.Header.Get("Content-Type"))
	}
	s.logger.Info("upstream connected", zap.String("upstream", s.upstreamURL))

	p := newParser(resp.Body, cfg.maxEventSize)
	for {
		ev, err := p.next()
		if err != nil {
			if errors.Is(err, errEventTooLarge) {
				err = fmt.Errorf("%w (%d bytes)", err, cfg.maxEventSize)
			}
			return delivered, err
		}
		s.publishEvent(&ev)
		delivered = true
	}
}
