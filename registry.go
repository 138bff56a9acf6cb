package ssefanout

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// This file is the registry: the streams of one upstream identity, kept
// across config reloads, and how a client finds its stream.

var (
	errStreamFull     = errors.New("stream has max_clients clients")
	errTooManyStreams = errors.New("handler has max_streams streams")
)

// maxStoppedKeys bounds how many keys whose origin answered 204 a registry
// remembers (registry.stop): a client may invent keys without end, and an
// origin may answer each with 204 for as long as its retry time says. Past
// it, the key that would be let go soonest is let go now: its next client
// costs an origin request.
const maxStoppedKeys = 4096

// registry maps stream keys to live streams. Its hub holds what they share.
type registry struct {
	hub

	// mu guards the fields below. Lock order: mu, then a stream's mu; a
	// client waits for its stream's lock without holding mu (streamFor),
	// so that a busy stream holds up no client of another.
	mu      sync.Mutex
	streams map[string]*stream
	stopped map[string]time.Time // keys whose origin said 204, until when
	closed  bool
	// users are the settings of the handlers whose config is running and
	// that use the registry, by their stop channels (adopt): the hub's
	// shared settings are chosen from them.
	users map[<-chan struct{}]*settings
	// upstreamTiers are the sse_fanout nodes the upstream answered from,
	// newest last (tier.go).
	upstreamTiers []string
}

// newRegistry returns a registry of streams read from the origin whose
// escaped base path (without a trailing slash) is basePath.
func newRegistry(cfg *settings, upstreamLabel, basePath string) *registry {
	r := &registry{
		streams: make(map[string]*stream),
		stopped: make(map[string]time.Time),
		users:   make(map[<-chan struct{}]*settings),
	}
	r.upstreamLabel = upstreamLabel
	r.metrics = newUpstreamMetrics(upstreamLabel)
	r.upstream = newUpstreamClient(basePath)
	r.settings.Store(cfg)
	return r
}

// registryKey identifies what makes streams shareable between handlers,
// in one config or across a reload: the origin, what is sent to it, what
// decides the streams, and the settings that shape a stream itself (its
// ring, its lag rule, its parser) or bound the registry as a whole. Two
// handlers that differ in any of them never share a stream; a reload that
// changes one opens new streams. What is left out is either a client's
// own (its handler's, see settings) or chosen over every handler that
// shares the registry (sharedSettings).
func (h *Handler) registryKey(cfg *settings) string {
	var b strings.Builder
	b.WriteString(h.Upstream)
	fmt.Fprintf(&b, "\nkey: %s\nignore: %s", h.Key, strings.Join(h.KeyIgnoreQuery, ","))
	if h.NodeID != "" { // another node's streams, even in this process
		fmt.Fprintf(&b, "\nnode: %s", h.NodeID)
	}
	fmt.Fprintf(&b, "\nbuffer: %d %d\nclient_queue: %d\nmax_event_size: %d\nmax_streams: %d\nmax_catch_ups_per_handler: %d",
		cfg.buffer, cfg.bufferBytes, cfg.clientQueue, cfg.maxEventSize, cfg.maxStreams, cfg.maxCatchUpsPerHandler)
	names := make([]string, 0, len(cfg.headerUp))
	for name := range cfg.headerUp {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, v := range cfg.headerUp[name] {
			fmt.Fprintf(&b, "\n%s: %s", name, v)
		}
	}
	return b.String()
}

// adopt counts cfg, the settings of the handler with the stop channel, as
// in use, and chooses the hub's shared settings again. A handler calls it
// as it serves its first request, which proves that its config is running:
// Caddy provisions a new config while the old one still serves, and a
// reload that fails later on must leave the running settings alone. A
// handler whose config was unloaded (stop closed) is not counted again.
func (r *registry) adopt(stop <-chan struct{}, cfg *settings) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-stop:
		return
	default:
	}
	r.users[stop] = cfg
	r.settings.Store(sharedSettings(r.users))
}

// release stops counting the settings of the handler with the stop
// channel, whose config is unloaded, and chooses the hub's shared settings
// from those left. With none left, the last ones stay, for the streams
// that wait out idle_close.
func (r *registry) release(stop <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.users[stop]; !ok {
		return
	}
	delete(r.users, stop)
	if len(r.users) > 0 {
		r.settings.Store(sharedSettings(r.users))
	}
}

// Destruct closes every stream and waits for the goroutines of all the
// streams it ever had. It runs when no loaded config uses the registry any
// more (caddy.Destructor).
func (r *registry) Destruct() error {
	r.mu.Lock()
	r.closed = true
	streams := make([]*stream, 0, len(r.streams))
	for _, s := range r.streams {
		streams = append(streams, s)
		s.mu.Lock()
		r.forget(s)
		s.mu.Unlock()
	}
	r.mu.Unlock()
	for _, s := range streams {
		s.close(errStreamClosed)
	}
	r.wg.Wait()
	r.upstream.CloseIdleConnections()
	return nil
}

// join adds a client of the handler with the settings cfg and the stop
// channel to the stream it asks for, opening the stream (and so its
// upstream connection) if it has no client yet. It never waits for the
// upstream. max_clients counts the handler's own clients of the stream.
func (r *registry) join(sr streamRequest, cfg *settings, stop <-chan struct{}) (*stream, *client, error) {
	s, evicted, err := r.streamFor(sr, r.settings.Load())
	if evicted != nil {
		evicted.logger.Debug("closing idle stream to make room for a new one")
		evicted.close(errStreamClosed)
	}
	if err != nil {
		return nil, nil, err
	}
	defer s.mu.Unlock()
	if err := s.loopLocked(sr); err != nil {
		return nil, nil, err
	}
	if cfg.maxClients > 0 && s.handlerClients[stop] >= cfg.maxClients {
		return nil, nil, errStreamFull
	}
	return s, s.addLocked(cfg, sr, stop), nil
}

// testHookStreamFound, set by tests, runs as streamFor has found a stream
// and not yet locked it.
var testHookStreamFound func(*stream)

// streamFor returns the stream sr asks for, locked, opening it if there
// is none. It waits for a stream's lock without holding the registry's,
// so that a busy stream holds up no client of another; if the registry
// let the stream go meanwhile, it looks again. Under max_streams, an idle
// stream gives way to a new one: it is returned as evicted, for the caller
// to close.
func (r *registry) streamFor(sr streamRequest, cfg *settings) (s, evicted *stream, err error) {
	for {
		r.mu.Lock()
		s, evicted, opened, err := r.findLocked(sr, cfg)
		r.mu.Unlock()
		if err != nil || opened {
			return s, evicted, err
		}
		if testHookStreamFound != nil {
			testHookStreamFound(s)
		}
		s.mu.Lock()
		if !s.gone {
			return s, nil, nil
		}
		s.mu.Unlock()
	}
}

// findLocked returns the stream sr asks for, or opens it, locked, and
// reports that it did. r.mu must be held.
func (r *registry) findLocked(sr streamRequest, cfg *settings) (s, evicted *stream, opened bool, err error) {
	if r.closed {
		return nil, nil, false, errStreamClosed
	}
	if err := r.loopLocked(sr); err != nil {
		return nil, nil, false, err
	}
	if until, ok := r.stopped[sr.key]; ok {
		if time.Now().Before(until) {
			return nil, nil, false, errOriginStopped
		}
		delete(r.stopped, sr.key)
	}
	if s = r.streams[sr.key]; s != nil {
		return s, nil, false, nil
	}
	if cfg.maxStreams > 0 && len(r.streams) >= cfg.maxStreams {
		if evicted = r.idleStreamLocked(); evicted == nil {
			return nil, nil, false, errTooManyStreams
		}
	}
	s = newStream(&r.hub, sr)
	s.onIdle = func() { r.closeIfIdle(s) }
	s.onTier = func(node string) { r.learnTier(s, node) }
	r.streams[sr.key] = s
	r.metrics.streams.Inc()
	s.mu.Lock() // before its upstream can publish: the first client starts at 0
	r.start(s)
	return s, evicted, true, nil
}

// forget removes s from the registry, if it is still there, and marks it
// gone. r.mu and s.mu must be held. The caller closes s after.
func (r *registry) forget(s *stream) {
	if r.streams[s.key] == s {
		delete(r.streams, s.key)
	}
	s.gone = true
}

// idleStreamLocked forgets a stream without clients, one that only waits
// out idle_close, and returns it, or nil. r.mu must be held.
func (r *registry) idleStreamLocked() *stream {
	for _, s := range r.streams {
		s.mu.Lock()
		idle := s.clientCountLocked() == 0 && s.idleTimer != nil
		if idle {
			r.forget(s)
		}
		s.mu.Unlock()
		if idle {
			return s
		}
	}
	return nil
}

// start runs a new stream's upstream reader and heartbeat.
func (r *registry) start(s *stream) {
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		if until := s.up.run(s.ctx); !until.IsZero() {
			r.stop(s, until)
		}
	}()
	go func() {
		defer r.wg.Done()
		s.runHeartbeat()
	}()
}

// stop closes s because the origin answered 204, and answers new clients
// of its key with 204 until the given time.
func (r *registry) stop(s *stream, until time.Time) {
	r.mu.Lock()
	s.mu.Lock()
	r.forget(s)
	s.mu.Unlock()
	now := time.Now()
	soonest, found := "", false // the key let go soonest, if one must go
	for key, t := range r.stopped {
		switch {
		case now.After(t):
			delete(r.stopped, key)
		case !found || t.Before(r.stopped[soonest]):
			soonest, found = key, true
		}
	}
	if _, held := r.stopped[s.key]; !held && len(r.stopped) >= maxStoppedKeys {
		delete(r.stopped, soonest)
	}
	r.stopped[s.key] = until
	r.mu.Unlock()
	s.close(errOriginStopped)
}

// closeIfIdle closes s if it still has no client; its idle timer calls it.
func (r *registry) closeIfIdle(s *stream) {
	r.mu.Lock()
	s.mu.Lock()
	idle := s.clientCountLocked() == 0 && s.idleTimer != nil && !s.gone
	if idle {
		r.forget(s)
	}
	s.mu.Unlock()
	r.mu.Unlock()
	if idle {
		s.logger.Debug("closing idle stream")
		s.close(errStreamClosed)
	}
}

// liveStreams returns the registry's open streams.
func (r *registry) liveStreams() []*stream {
	r.mu.Lock()
	defer r.mu.Unlock()
	streams := make([]*stream, 0, len(r.streams))
	for _, s := range r.streams {
		streams = append(streams, s)
	}
	return streams
}

// endClientsOf ends, each at a moment of its own, the clients that the
// handler with this stop channel serves.
func (r *registry) endClientsOf(stop <-chan struct{}) {
	for _, s := range r.liveStreams() {
		s.endClientsOf(stop)
	}
}
