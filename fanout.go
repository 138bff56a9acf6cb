package ssefanout

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// This file is the hub: a registry of streams, and for each stream the
// frames its single upstream reader publishes and the clients it feeds.

var (
	errStreamFull     = errors.New("stream has max_clients clients")
	errTooManyStreams = errors.New("handler has max_streams streams")
	errSlowClient     = errors.New("client fell more than client_queue events behind")
	errStreamClosed   = errors.New("stream closed")
	errOriginStopped  = errors.New("origin answered 204 No Content: stop")
)

// settings are a handler's tunables, resolved to their defaults. A registry
// holds the latest ones; a config reload replaces them.
type settings struct {
	heartbeat             time.Duration // keepalive after this much silence; <= 0: off
	retry                 int64         // retry sent to clients, in ms; < 0: the origin's passes through
	buffer                int           // frames kept for Last-Event-ID replay
	bufferBytes           int           // bytes kept for replay and lagging clients
	clientQueue           int           // frames a client may fall behind before it is cut
	idleClose             time.Duration // upstream kept this long after the last client left
	maxClients            int           // per stream; 0: unlimited
	maxStreams            int           // per registry; < 0: unlimited
	maxCatchUps           int           // catch-ups under way per stream
	maxCatchUpsPerHandler int           // catch-ups under way per registry
	upstreamWait          time.Duration // upstream_timeout: the most an upstream may stay silent
	maxEventSize          int           // bytes; a larger event breaks the upstream connection
	catchUp               bool          // fetch what the buffer lacks from the origin
	primeCursor           bool          // send joining clients the stream's latest id
	staleEvent            string        // event type announcing an unservable cursor; "": none
	writeTimeout          time.Duration // bound on one batch of writes to a client
	retryJitter           int           // percent by which each client's retry is spread
	headerUp              http.Header   // sent upstream on every request
	logger                *zap.Logger
}

// ringCapacity is how many frames a stream keeps: a client placed as far
// back as spliceWindow must still find its frames after client_queue more
// are published, since only then does it count as behind and get cut.
func (cfg *settings) ringCapacity() int {
	return cfg.spliceWindow() + cfg.clientQueue
}

// spliceWindow is how far back in the ring a client may be placed: by its
// Last-Event-ID (at most buffer frames back) or where a catch-up meets the
// shared stream.
func (cfg *settings) spliceWindow() int {
	return max(cfg.buffer, 1)
}

// registry maps stream keys to live streams. It owns the upstream HTTP
// client its streams share.
type registry struct {
	settings      atomic.Pointer[settings]
	gen           atomic.Uint64 // the generation of the handler whose settings apply
	upstreamLabel string        // the configured base URL, redacted, for logs, metrics and the admin API
	metrics       *upstreamMetrics
	upstream      *http.Client
	wg            sync.WaitGroup // every stream's goroutines
	catchUps      atomic.Int64   // catch-up feeds under way, over every stream

	mu      sync.Mutex
	streams map[string]*stream
	stopped map[string]time.Time // keys whose origin said 204, until when
	closed  bool
}

func newRegistry(cfg *settings, gen uint64, upstreamLabel string) *registry {
	r := &registry{
		upstreamLabel: upstreamLabel,
		metrics:       newUpstreamMetrics(upstreamLabel),
		upstream:      newUpstreamClient(),
		streams:       make(map[string]*stream),
		stopped:       make(map[string]time.Time),
	}
	r.settings.Store(cfg)
	r.gen.Store(gen)
	return r
}

// adopt makes cfg the registry's settings, unless a handler provisioned
// later than gen already supplied them. A handler calls it as it serves a
// request, which proves that its config is running: Caddy provisions a new
// config while the old one still serves, and a reload that fails later on
// must leave the running settings alone.
func (r *registry) adopt(cfg *settings, gen uint64) {
	if r.gen.Load() >= gen {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen.Load() < gen {
		r.settings.Store(cfg)
		r.gen.Store(gen)
	}
}

// Destruct closes every stream and waits for the goroutines of all the
// streams it ever had. It runs when no loaded config uses the registry any
// more (caddy.Destructor).
func (r *registry) Destruct() error {
	r.mu.Lock()
	r.closed = true
	streams := make([]*stream, 0, len(r.streams))
	for key, s := range r.streams {
		streams = append(streams, s)
		delete(r.streams, key)
	}
	r.mu.Unlock()
	for _, s := range streams {
		s.close(errStreamClosed)
	}
	r.wg.Wait()
	r.upstream.CloseIdleConnections()
	return nil
}

// join adds a client to the stream it asks for, creating the stream (and so
// its upstream connection) if it has no client yet. It never waits for the
// upstream.
func (r *registry) join(sr streamRequest) (*stream, *client, error) {
	cfg := r.settings.Load()
	s, evicted, err := r.streamFor(sr, cfg)
	if evicted != nil {
		evicted.logger.Debug("closing idle stream to make room for a new one")
		evicted.close(errStreamClosed)
	}
	if err != nil {
		return nil, nil, err
	}
	defer s.mu.Unlock()
	if cfg.maxClients > 0 && len(s.clients)+s.detached >= cfg.maxClients {
		return nil, nil, errStreamFull
	}
	c := newClient(s)
	s.placeLocked(c, cfg, sr)
	s.clients[c] = struct{}{}
	r.metrics.clients.Inc()
	if s.idleTimer != nil {
		s.idleTimer.Stop()
		s.idleTimer = nil
	}
	return s, c, nil
}

// streamFor returns the stream sr asks for, locked, opening it if there
// is none. Under max_streams, an idle stream gives way to a new one: it is
// returned as evicted, for the caller to close.
func (r *registry) streamFor(sr streamRequest, cfg *settings) (s, evicted *stream, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, nil, errStreamClosed
	}
	if until, ok := r.stopped[sr.key]; ok {
		if time.Now().Before(until) {
			return nil, nil, errOriginStopped
		}
		delete(r.stopped, sr.key)
	}
	s = r.streams[sr.key]
	if s == nil {
		if cfg.maxStreams > 0 && len(r.streams) >= cfg.maxStreams {
			evicted = r.idleStreamLocked()
			if evicted == nil {
				return nil, nil, errTooManyStreams
			}
			delete(r.streams, evicted.key)
		}
		s = newStream(r, sr)
		r.streams[sr.key] = s
		r.metrics.streams.Inc()
		s.mu.Lock() // before its upstream can publish: the client starts at 0
		s.start()
		return s, evicted, nil
	}
	s.mu.Lock()
	return s, evicted, nil
}

// idleStreamLocked returns a stream without clients, one that only waits
// out idle_close, or nil. r.mu must be held.
func (r *registry) idleStreamLocked() *stream {
	for _, s := range r.streams {
		s.mu.RLock()
		idle := len(s.clients)+s.detached == 0 && s.idleTimer != nil
		s.mu.RUnlock()
		if idle {
			return s
		}
	}
	return nil
}

// placeLocked sets where a joining client starts: after its cursor when
// the buffer holds it, else at the live head, with a catch-up or a stale
// notice to come. It also arms the cursor priming. s.mu must be held.
func (s *stream) placeLocked(c *client, cfg *settings, sr streamRequest) {
	c.cursor.Store(s.ring.head)
	c.joinedAt = s.ring.head
	switch {
	case sr.unusableCursor:
		s.reg.metrics.replayMisses.Inc()
		c.stale = true // announced with no data: the cursor is not echoed
	case sr.hasCursor:
		seq, ok := s.ring.findID(string(sr.cursor), cfg.buffer)
		switch {
		case ok:
			s.reg.metrics.replayHits.Inc()
			c.cursor.Store(seq)
		case cfg.catchUp:
			s.reg.metrics.replayMisses.Inc()
			c.catchUpID = sr.cursor
			c.catchingUp = true
			return // the catch-up ends with frames that carry ids
		default:
			s.reg.metrics.replayMisses.Inc()
			c.staleID, c.stale = sr.cursor, true
		}
	}
	if cfg.primeCursor && s.hasLastID {
		c.prime = appendEvent(nil, &Event{ID: s.lastID}, true)
		c.primeAt = s.ring.head
	}
}

// stop closes s because the origin answered 204, and answers new clients
// of its key with 204 until the given time.
func (r *registry) stop(s *stream, until time.Time) {
	r.mu.Lock()
	if r.streams[s.key] == s {
		delete(r.streams, s.key)
	}
	for key, t := range r.stopped {
		if time.Now().After(t) {
			delete(r.stopped, key)
		}
	}
	r.stopped[s.key] = until
	r.mu.Unlock()
	s.close(errOriginStopped)
}

// closeIfIdle closes s if it still has no client; the idle timer calls it.
func (r *registry) closeIfIdle(s *stream) {
	r.mu.Lock()
	s.mu.Lock()
	idle := len(s.clients)+s.detached == 0 && s.idleTimer != nil && r.streams[s.key] == s
	if idle {
		delete(r.streams, s.key)
	}
	s.mu.Unlock()
	r.mu.Unlock()
	if idle {
		s.logger.Debug("closing idle stream")
		s.close(errStreamClosed)
	}
}

// stream is one upstream event stream and the clients it feeds.
type stream struct {
	key           string
	label         string // the key as logs and the admin API show it
	upstreamURL   string
	upstreamLabel string      // upstreamURL as logs and the admin API show it
	headerUp      http.Header // sent on every upstream request
	// openCursor is the cursor of the client that opened the stream: its
	// upstream asks for the events after it until the origin has sent
	// something (see resume). It is never any client's id line.
	openCursor    clientCursor
	hasOpenCursor bool
	reg           *registry
	logger        *zap.Logger
	started       time.Time // the base of lastSend

	ctx    context.Context    // ends when the stream is closed
	cancel context.CancelFunc // ends ctx, and so the upstream requests
	done   chan struct{}      // closed when the stream is closed
	once   sync.Once

	lastSend    atomic.Int64  // nanoseconds after started of the last frame or keepalive
	keepalives  atomic.Uint64 // count of keepalive rounds; clients compare it with theirs
	originRetry atomic.Int64  // the origin's latest retry in ms; -1 before any

	mu        sync.RWMutex // guards the fields below
	ring      *ring
	clients   map[*client]struct{}          // those served in their request goroutines
	shards    []*writerShard                // the shared writers of detached clients
	detached  int                           // how many clients the shards serve
	lastID    string                        // the last event ID of the newest frame; only ever the origin's
	hasLastID bool                          // the origin has sent an id; from then on every frame carries one
	idleTimer *time.Timer                   // set while the stream has no client
	feeds     map[clientCursor]*catchUpFeed // catch-ups being read, by cursor
	fetches   int                           // catch-up fetches under way

	// The upstream connection's state, for the admin API.
	state       string    // one of the state constants
	lastErr     string    // why the last connection failed
	connectedAt time.Time // when the current connection opened
	connects    int       // connections opened
	received    uint64    // blocks published
}

// Upstream connection states.
const (
	stateConnecting = "connecting"
	stateConnected  = "connected"
	stateBackoff    = "backoff"
	stateStopped    = "stopped"
)

// setState records the upstream connection's state; err may be nil.
func (s *stream) setState(state string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = state
	switch state {
	case stateConnected:
		s.connectedAt = time.Now()
		s.connects++
	case stateBackoff, stateStopped:
		if err != nil {
			s.lastErr = err.Error()
		}
	}
}

func newStream(r *registry, sr streamRequest) *stream {
	cfg := r.settings.Load()
	s := &stream{
		key:           sr.key,
		label:         sr.label,
		upstreamURL:   sr.upstreamURL,
		upstreamLabel: redactURL(sr.upstreamURL),
		headerUp:      sr.headerUp,
		openCursor:    sr.cursor,
		hasOpenCursor: sr.hasCursor,
		reg:           r,
		logger:        cfg.logger.With(zap.String("stream", sr.label)),
		started:       time.Now(),
		done:          make(chan struct{}),
		ring:          newRing(cfg.ringCapacity(), cfg.bufferBytes),
		clients:       make(map[*client]struct{}),
		state:         stateConnecting,
	}
	if sr.hasCursor {
		// A new stream begins where its first client left off: its
		// upstream asks for the events after that cursor, and a client
		// that comes with the same cursor replays them from the start.
		// After a restart, when every browser comes back with about the
		// same cursor, this spares the origin one catch-up per client.
		s.ring.baseID, s.ring.hasBase = string(sr.cursor), true
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.originRetry.Store(-1)
	return s
}

// start runs the stream's upstream reader and heartbeat.
func (s *stream) start() {
	s.reg.wg.Add(2)
	go func() {
		defer s.reg.wg.Done()
		s.readUpstream(s.ctx)
	}()
	go func() {
		defer s.reg.wg.Done()
		s.runHeartbeat()
	}()
}

// close stops the upstream connection and cuts every client with cause.
func (s *stream) close(cause error) {
	s.once.Do(func() {
		s.reg.metrics.streams.Dec()
		if s.cancel != nil {
			s.cancel()
		}
		close(s.done)
		s.mu.Lock()
		for c := range s.clients {
			c.cut(cause)
			delete(s.clients, c)
		}
		if s.idleTimer != nil {
			s.idleTimer.Stop()
			s.idleTimer = nil
		}
		s.mu.Unlock()
	})
}

// leave removes c; the last client to leave starts the idle timer.
func (s *stream) leave(c *client) {
	s.reg.metrics.clients.Dec()
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.shard != nil {
		s.detached--
	} else {
		delete(s.clients, c)
	}
	if len(s.clients)+s.detached > 0 || s.idleTimer != nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	wait := s.reg.settings.Load().idleClose
	s.idleTimer = time.AfterFunc(wait, func() { s.reg.closeIfIdle(s) })
}

// frameOf encodes ev once, as every client of the stream is sent it, and
// takes its retry time; it returns nil for a block with nothing else.
func (s *stream) frameOf(ev *Event) *frame {
	if ev.HasRetry {
		s.originRetry.Store(ev.Retry)
		if !ev.HasData && !ev.HasID && ev.Type == "" {
			s.wakeAll() // nothing to frame; clients pick up the new retry
			return nil
		}
	}
	// Only the upstream reader writes hasLastID, so it may read it unlocked.
	withID := ev.HasID || s.hasLastID
	return &frame{id: ev.ID, setsID: ev.HasID, bytes: appendEvent(nil, ev, withID)}
}

// publish appends f to the ring and wakes every client. It never blocks on
// a client: one that has fallen more than client_queue frames behind is cut.
// A client's replay does not count: only frames published after it joined.
func (s *stream) publish(f *frame) {
	queue := uint64(s.reg.settings.Load().clientQueue)
	s.mu.Lock()
	s.ring.push(f)
	s.received++
	s.hasLastID = s.hasLastID || f.setsID
	if s.hasLastID {
		s.lastID = f.id
	}
	for c := range s.clients {
		if c.catchingUp {
			continue // it reads from the origin until it splices in
		}
		if s.behindLocked(c, queue) {
			s.reg.metrics.slowClientDrops.Inc()
			c.cut(errSlowClient)
			delete(s.clients, c)
			continue
		}
		c.wake()
	}
	for _, sh := range s.shards {
		sh.wake() // its clients' lag is checked as it serves them
	}
	s.mu.Unlock()
	s.reg.metrics.eventsReceived.Inc()
	s.markSent()
}

// wakeAll wakes every client without publishing a frame.
func (s *stream) wakeAll() {
	s.mu.RLock()
	for c := range s.clients {
		c.wake()
	}
	for _, sh := range s.shards {
		sh.wake()
	}
	s.mu.RUnlock()
}

// attach moves c, whose connection was taken over, from the clients served
// in their request goroutines to a shared writer. It reports false if the
// hub cut c meanwhile.
func (s *stream) attach(c *client, dc *detachedConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done: // no shared writer would ever end it
		return false
	default:
	}
	if _, ok := s.clients[c]; !ok {
		return false
	}
	delete(s.clients, c)
	c.conn = dc
	c.shard = s.shardForLocked()
	c.shard.add(c)
	s.detached++
	s.reg.wg.Add(1) // for c.watch
	select {
	case <-c.stop:
		// Its config was unloaded while it started: endDetached has
		// passed it over, so it ends here, as the others do.
		c.endWithin(errHandlerStopped)
	default:
	}
	return true
}

// framesFor appends to dst the frames after c's cursor, for a shared
// writer. It reports false if c has fallen more than queue frames behind,
// or the frames it had yet to read were evicted.
func (s *stream) framesFor(c *client, dst []*frame, queue uint64) ([]*frame, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.behindLocked(c, queue) {
		return dst, false
	}
	return s.ring.appendAfter(dst, c.cursor.Load())
}

// behind reports whether c has fallen more than queue frames behind.
func (s *stream) behind(c *client, queue uint64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.behindLocked(c, queue)
}

// behindLocked reports whether c has fallen more than queue frames behind
// what was published since it joined: its replay does not count. s.mu
// must be held.
func (s *stream) behindLocked(c *client, queue uint64) bool {
	return s.ring.head-max(c.cursor.Load(), c.joinedAt) > queue
}

// endDetached ends the detached clients that the handler with this stop
// channel served, each at a moment of its own within closeSpread.
func (r *registry) endDetached(stop <-chan struct{}) {
	r.mu.Lock()
	streams := make([]*stream, 0, len(r.streams))
	for _, s := range r.streams {
		streams = append(streams, s)
	}
	r.mu.Unlock()
	for _, s := range streams {
		s.mu.RLock()
		shards := append([]*writerShard(nil), s.shards...)
		s.mu.RUnlock()
		for _, sh := range shards {
			sh.mu.Lock()
			for _, c := range sh.clients {
				if c.stop == stop {
					c.endWithin(errHandlerStopped)
				}
			}
			sh.mu.Unlock()
		}
	}
}

// framesAfter appends to dst the frames after seq. It reports false if
// some were evicted, which means the client fell too far behind.
func (s *stream) framesAfter(dst []*frame, seq uint64) ([]*frame, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ring.appendAfter(dst, seq)
}

// markSent records that every client was just sent something.
func (s *stream) markSent() {
	s.lastSend.Store(int64(time.Since(s.started)))
}
