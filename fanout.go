package ssefanout

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"iter"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"go.uber.org/zap"
)

// This file is the stream: one upstream event stream, the ring its frames
// go into, and the clients it feeds. Its upstream reader (upstream.go)
// publishes; its clients' writers read the ring (client.next).

var (
	errStreamClosed  = errors.New("stream closed")
	errOriginStopped = errors.New("origin answered 204 No Content: stop")
)

// hub is what the streams of one registry share.
type hub struct {
	settings      atomic.Pointer[settings]
	metrics       *upstreamMetrics
	upstream      *http.Client
	upstreamLabel string         // the configured base URL, redacted
	wg            sync.WaitGroup // every stream's goroutines
	catchUps      atomic.Int64   // catch-up fetches under way, over every stream
}

// stream is one upstream event stream and the clients it feeds.
type stream struct {
	key   string
	label string    // the key as logs and the admin API show it
	up    *upstream // its connection to the origin (upstream.go)

	hub     *hub
	logger  *zap.Logger
	started time.Time    // the base of lastSend
	onIdle  func()       // set by the registry: closes the stream if it is still idle
	onTier  func(string) // set by the registry: notes the node the upstream answered from (tier.go)

	ctx    context.Context    // ends when the stream is closed
	cancel context.CancelFunc // ends ctx, and so the upstream requests
	done   chan struct{}      // closed when the stream is closed
	once   sync.Once

	ring     *ring         // the frames; its own lock guards it
	shared   sharedWriters // the shared writers of its detached clients (sharedwriter.go); their own lock guards them
	catchUps catchUps      // its catch-ups (catchupfeed.go); their own lock guards them
	chains   chains        // its compression, once per stream (compresschain.go)
	signals  signals       // keepalive rounds and the origin's retry, for every client
	lastSend atomic.Int64  // nanoseconds after started of the last frame or keepalive
	filtered atomic.Int64  // clients with an event-type filter, which need filter rounds

	// Lock order: mu, then ring.mu.
	mu sync.RWMutex // guards the fields below
	// clients are the stream's clients, each with the writer that serves
	// it (client.writer): its request goroutine, or a shared writer.
	clients map[*client]struct{}
	// handlerClients counts the clients of each handler, by its stop
	// channel: max_clients counts a handler's own.
	handlerClients map[<-chan struct{}]int
	woken          []writer    // publish's list of writers to wake, kept between events; its own (only the upstream reader publishes)
	idleTimer      *time.Timer // set while the stream has no client
	closed         bool        // close has run: no client joins or attaches
	// gone is set when the registry lets the stream go (registry.forget),
	// always before closing it: a client that found the stream and then
	// waited for its lock looks for its key again.
	gone bool
	// upstreamTier is the sse_fanout node the upstream answered from; ""
	// for an origin (tier.go).
	upstreamTier string
}

func newStream(h *hub, sr streamRequest) *stream {
	cfg := h.settings.Load()
	s := &stream{
		key:            sr.key,
		label:          sr.label,
		hub:            h,
		logger:         cfg.logger.With(zap.String("stream", sr.label)),
		started:        time.Now(),
		done:           make(chan struct{}),
		ring:           newRing(cfg.ringCapacity(), cfg.bufferBytes),
		clients:        make(map[*client]struct{}),
		handlerClients: make(map[<-chan struct{}]int),
	}
	s.up = newUpstream(s, sr)
	s.catchUps.s = s
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.signals.originRetry.Store(-1)
	return s
}

// addLocked adds a joining client of the handler with the settings cfg
// and the stop channel, and serves it by cfg: it sets where the client
// starts, after its cursor when the buffer holds it, else at the live
// head, with a catch-up or a stale notice to come; without a cursor, at
// the live head or, with rewind, before the last events (rewind.go). It
// arms the cursor priming. s.mu must be held.
func (s *stream) addLocked(cfg *settings, sr streamRequest, stop <-chan struct{}) *client {
	c := newClient(s.ring, &s.signals, cfg, s.hub.metrics, sr.pageMember)
	c.asTier(sr.via)
	c.stop = stop
	s.handlerClients[stop]++
	c.pack = s.chains.newPacker(sr.encoding, sr.filter != nil)
	select {
	case <-stop:
		// Its config was unloaded as it joined: endClientsOf has passed
		// it over, so it ends here, as the others do.
		c.endWithin(errHandlerStopped)
	default:
	}
	s.ring.mu.RLock()
	defer s.ring.mu.RUnlock()
	c.place(s.ring.head, s.ring.head)
	s.clients[c] = struct{}{}
	s.hub.metrics.clients.Inc()
	if s.idleTimer != nil {
		s.idleTimer.Stop()
		s.idleTimer = nil
	}
	idAt := uint64(0)  // where the stream's last event ID is the one the client holds
	hasLatest := false // its replay or its own cursor carries the latest id
	c.resumed = cursorNone
	switch {
	case sr.unusableCursor:
		s.hub.metrics.replayMisses.Inc()
		c.stale = true // announced with no data: the cursor is not echoed
		c.resumed = cursorStale
	case sr.hasCursor:
		seq, ok := s.ring.findID(string(sr.cursor), cfg.buffer)
		switch {
		case ok:
			s.hub.metrics.replayHits.Inc()
			c.resumed = cursorReplay
			c.place(seq, s.ring.head)
			idAt = seq
			if last, _ := s.ring.lastID(); seq < s.ring.head || last == string(sr.cursor) {
				// Its replay, or its own cursor, carries the latest id:
				// priming would repeat it (and a tier would publish it).
				hasLatest = true
			}
		case cfg.catchUp:
			s.hub.metrics.replayMisses.Inc()
			c.catchUpID = sr.cursor
			c.catchingUp = true // until splice places it
			c.resumed = cursorCatchUp
		default:
			s.hub.metrics.replayMisses.Inc()
			c.staleID, c.stale = sr.cursor, true
			c.resumed = cursorStale
		}
	default:
		// A tier's upstream connection is not rewound: that would put
		// events from before its clients joined into its stream as live.
		if sr.rewind > 0 && len(sr.via) == 0 {
			seq, events := s.ring.rewindStart(sr.rewind, cfg.buffer, sr.filter)
			c.place(seq, s.ring.head)
			s.hub.metrics.eventsRewound.Add(float64(events))
		}
		idAt = c.cursor.Load() // it holds no id, and needs none before the next
	}
	if sr.filter != nil {
		c.filter = newClientFilter(sr.filter, string(sr.cursor), idAt, &s.signals)
		s.filtered.Add(1)
	}
	if c.catchingUp || hasLatest {
		return c // a catch-up ends with frames that carry ids; no priming
	}
	if id, ok := s.ring.lastID(); ok && cfg.primeCursor {
		c.priming, c.primeAt, c.primeID = true, s.ring.head, id
	}
	return c
}

// splice places c, which was catching up, on the shared stream: after the
// frame at the seq that find returns, when it finds one in the ring, else,
// if orHead, at the live head; what follows is live to c (client.place).
// It reports whether find found one. find runs with the ring's lock held.
func (s *stream) splice(c *client, find func(r *ring) (uint64, bool), orHead bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ring.mu.RLock()
	defer s.ring.mu.RUnlock()
	seq, ok := find(s.ring)
	if !ok && !orHead {
		return false
	}
	if !ok {
		seq = s.ring.head
	}
	c.place(seq, s.ring.head)
	c.catchingUp = false
	return ok
}

// eachClient calls f for every client of the stream, with s.mu read-locked:
// f must neither take it nor remove a client.
func (s *stream) eachClient(f func(c *client)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for c := range s.clients {
		f(c)
	}
}

// endClientsOf ends, each at a moment of its own, the clients that the
// handler with this stop channel serves.
func (s *stream) endClientsOf(stop <-chan struct{}) {
	s.eachClient(func(c *client) {
		if c.stop == stop {
			c.endWithin(errHandlerStopped)
		}
	})
}

// clientsAndTier returns how many clients the stream has, and the node its
// upstream answered from ("": an origin), for the admin API.
func (s *stream) clientsAndTier() (int, string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.clients), s.upstreamTier
}

// clientCountLocked is how many clients the stream has. s.mu must be held.
func (s *stream) clientCountLocked() int { return len(s.clients) }

// writer is the writer that serves c now.
func (c *client) writer() writer { return *c.w.Load() }

// serveBy has w serve c from now on.
func (c *client) serveBy(w writer) { c.w.Store(&w) }

// rebind has the writer that bind returns serve x from now on: the
// client c of s, or the multiplexed page whose first member c is. It
// reports whether it does: not when c has left the stream's clients (it
// was cut) or the stream is closed, since no writer would then ever end
// it. bind runs with s.mu held, the stream open: it may start goroutines
// that close waits for (hub.wg).
func (s *stream) rebind(c *client, x served, bind func() writer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.clients[c]; !ok || s.closed {
		return false
	}
	x.serveBy(bind())
	return true
}

// leave removes c, whichever writer served it; the last client to leave
// starts the idle timer.
func (s *stream) leave(c *client) {
	s.hub.metrics.clients.Dec()
	c.pack.release()
	if c.filter != nil {
		s.filtered.Add(-1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.clients, c)
	if s.handlerClients[c.stop]--; s.handlerClients[c.stop] <= 0 {
		delete(s.handlerClients, c.stop)
	}
	if s.clientCountLocked() > 0 || s.idleTimer != nil || s.closed {
		return
	}
	wait := s.hub.settings.Load().idleClose
	s.idleTimer = time.AfterFunc(wait, s.onIdle)
}

// logStarted logs, at debug level, since clients come and go, that c
// started: who it is (client.peer), whether it was detached, and what its
// cursor got. It is logged once c's writer is chosen, after its catch-up
// and replay.
func (s *stream) logStarted(c *client, detached bool) {
	if ce := s.logger.Check(zap.DebugLevel, "client started"); ce != nil {
		ce.Write(append(c.peer[:len(c.peer):len(c.peer)],
			zap.Bool("detached", detached),
			zap.Stringer("cursor", c.resumed))...)
	}
}

// logEnded logs why a client of s ended, whichever writer served it, with
// who it is, how long it stayed and what it was sent: a slow-client cut
// at warn, since the operator may want to know; any other end at debug,
// since clients come and go. duration and size are named as in Caddy's
// access log, which logs a detached client as it is detached.
func (s *stream) logEnded(c *client, cause error, detached bool) {
	level, msg := zap.DebugLevel, "client ended"
	if errors.Is(cause, errSlowClient) {
		level, msg = zap.WarnLevel, "slow client cut"
	}
	if ce := s.logger.Check(level, msg); ce != nil {
		ce.Write(append(c.peer[:len(c.peer):len(c.peer)],
			zap.Bool("detached", detached),
			zap.Stringer("cursor", c.resumed),
			zap.NamedError("reason", cause),
			zap.Duration("duration", time.Duration(time.Now().UnixNano()-c.joined)),
			zap.Int64("events", c.sent.events.Load()),
			zap.Int64("size", c.sent.bytes.Load()))...)
	}
}

// close stops the upstream connection and ends every client with cause,
// each at a moment of its own (see client.endWithin), once the shared
// writers have sent what was published before.
func (s *stream) close(cause error) {
	s.once.Do(func() {
		s.hub.metrics.streams.Dec()
		// closed is set before the upstream's context ends. The upstream
		// goroutine is counted in the hub's goroutines until it returns,
		// after that, so what is counted under s.mu while the stream is
		// open (a catch-up's fetch, a detached client's watch, a shard) is
		// counted before the count can fall to zero: Destruct's wait
		// sees it.
		s.mu.Lock()
		s.closed = true
		if s.upstreamTier != "" {
			s.hub.metrics.upstreamTierStreams.Dec()
		}
		close(s.done)
		ending := slices.Collect(maps.Keys(s.clients))
		clear(s.clients)
		if s.idleTimer != nil {
			s.idleTimer.Stop()
			s.idleTimer = nil
		}
		s.mu.Unlock()
		s.cancel()
		s.shared.wait()
		for _, c := range ending {
			c.endWithin(cause)
		}
	})
}

// publish publishes ev, an event the upstream read, and reports whether
// it published a frame: it takes ev's retry time for every client; it
// encodes ev once, as every client is sent it, unless ev holds nothing
// else, or rs finds it a resend of what the ring holds (resend); it
// compresses the frame for the stream's compressed clients, if it has
// any, appends it to the ring and wakes every writer, but those of
// filtered clients that it passes over (clientFilter.passOver). Each
// writer applies the lag rule as it reads (client.next); publish applies
// it only to a client whose writer is in a write, and cannot: it never
// blocks on a client. Only the upstream reader calls it.
//
// It is the whole of a plain event's way from the upstream to the
// writers, with no call out of this file: the way docs/code-layout.md
// follows.
func (s *stream) publish(ev *sse.Event, rs *resend) bool {
	if ev.HasRetry {
		if s.signals.originRetry.Swap(ev.Retry) != ev.Retry && s.hub.settings.Load().retry < 0 {
			s.chains.restartAll.Store(true) // each client is sent a retry line of its own
		}
		if ev.RetryOnly() {
			s.wakeAll() // nothing to frame; clients pick up the new retry
			return false
		}
	}
	// Only the upstream reader pushes frames, so it may read hasIDs unlocked.
	f := newFrame(ev, ev.HasID || s.ring.hasIDs)
	if rs.checking && rs.drops(s.ring, f) {
		return false
	}
	if s.chains.live.Load() > 0 {
		s.chains.pack(f)
	}
	cfg := s.hub.settings.Load()
	queue := uint64(cfg.clientQueue)
	passedOver := 0
	s.mu.Lock()
	s.ring.mu.Lock()
	s.ring.push(f)
	woken := s.woken[:0]
	for c := range s.clients {
		if c.catchingUp {
			continue // it reads from the origin until it splices in
		}
		if c.filter != nil && c.filter.passOver(c, f, cfg.buffer) {
			passedOver++
			continue
		}
		if c.writing.Load() != 0 && c.cutIfLagging(queue) {
			delete(s.clients, c)
			continue
		}
		woken = append(woken, c.writer())
	}
	s.ring.mu.Unlock()
	s.mu.Unlock()
	// Woken only now: a writer that woke while the ring was locked for
	// writing would park again on its read lock, a second switch per event;
	// and with s.mu free, so that clients join and leave meanwhile. A
	// writer that stopped serving its client since (it left, or was
	// detached: the shared writer that took it over wakes itself) is woken
	// for nothing.
	for _, w := range woken {
		w.wake()
	}
	clear(woken)
	s.woken = woken[:0]
	if passedOver > 0 {
		s.hub.metrics.countFiltered(passedOver)
	}
	s.hub.metrics.eventsReceived.Inc()
	s.markSent()
	return true
}

// wakeAll wakes every writer without publishing a frame.
func (s *stream) wakeAll() {
	s.eachClient(func(c *client) { c.writer().wake() })
}

// markSent records that every client was just sent something.
func (s *stream) markSent() {
	s.lastSend.Store(int64(time.Since(s.started)))
}

// The ring of encoded frames: the replay buffer and every client's queue
// at once.

// frame is one encoded block, shared by the replay buffer and every client
// that is sent it. Nobody modifies a frame once it is published.
type frame struct {
	seq       uint64      // position in the stream, from 1; set by ring.push
	id        string      // the stream's last event ID after this frame
	setsID    bool        // the frame's own block had an id field
	carriesID bool        // bytes hold an id line: the frame sets a client's lastEventId to id
	fires     bool        // the block has data: an EventSource fires an event for it
	typ       string      // the event type it dispatches as: "message" when it has none
	bytes     []byte      // the wire form, written to clients as is
	packs     *framePacks // its compressed forms (compresschain.go); nil when no client of its stream was compressed

	// size is its one size, what buffer_bytes counts: its bytes and every
	// compressed form made of it so far (grow). held is the count of the
	// ring that holds it, set by push, which grow keeps up to date too.
	size atomic.Int64
	held *atomic.Int64
}

// newFrame encodes ev once, as every client is sent it, with an id line
// when withID is set.
func newFrame(ev *sse.Event, withID bool) *frame {
	f := &frame{
		id:        ev.ID,
		setsID:    ev.HasID,
		carriesID: withID,
		fires:     ev.HasData,
		typ:       cmp.Or(ev.Type, "message"),
		bytes:     sse.AppendEvent(nil, ev, withID),
	}
	f.size.Store(int64(len(f.bytes)))
	return f
}

// grow counts n more bytes of f's compressed forms in its size, and in the
// count of the ring that holds it, if one does. Forms are made before f is
// pushed, by the upstream reader, or, once it is held, under the ring's
// read lock: never while push or eviction, under the write lock, reads it.
func (f *frame) grow(n int) {
	f.size.Add(int64(n))
	if f.held != nil {
		f.held.Add(int64(n))
	}
}

// sameEvent reports whether f and g are the same event: the same id, set
// the same way, and the same bytes (type and data).
func (f *frame) sameEvent(g *frame) bool {
	return f.setsID == g.setsID && f.id == g.id && bytes.Equal(f.bytes, g.bytes)
}

// ring holds a stream's most recent frames, oldest evicted first, bounded
// both in count and in bytes. It is at once the replay buffer and every
// client's queue: a client is a cursor into it (the seq of the last frame it
// was handed), so publishing costs no copy and no allocation per client.
//
// Its methods are NOT safe for concurrent use: mu guards the fields. The
// stream's upstream reader pushes under the write lock; clients' writers
// read under the read lock (client.next).
type ring struct {
	mu       sync.RWMutex
	slots    []*frame // the frame with seq n is in slots[n%len(slots)]
	head     uint64   // seq of the newest frame; 0 before the first
	tail     uint64   // seq of the oldest frame held; head+1 when empty
	maxBytes int      // evict the oldest while heldBytes exceeds this (0: no byte bound)
	hasIDs   bool     // some frame's block had an id: from then on every frame carries one
	// size is the sum of the sizes of the frames held (frame.size), kept
	// by push and eviction and, as a held frame's forms are made, by
	// frame.grow under the read lock.
	size atomic.Int64
}

// newRing returns a ring that holds at most count frames (at least one) and,
// when maxBytes > 0, at most maxBytes bytes, beyond the newest frame.
func newRing(count, maxBytes int) *ring {
	if count < 1 {
		count = 1
	}
	return &ring{slots: make([]*frame, count), tail: 1, maxBytes: maxBytes}
}

// push appends f, numbers it, and evicts what no longer fits.
func (r *ring) push(f *frame) {
	r.head++
	f.seq = r.head
	if r.head-r.tail+1 > uint64(len(r.slots)) {
		r.evictOldest()
	}
	r.slots[r.head%uint64(len(r.slots))] = f
	r.hasIDs = r.hasIDs || f.setsID
	f.held = &r.size
	r.size.Add(f.size.Load())
	for r.maxBytes > 0 && r.heldBytes() > r.maxBytes && r.tail < r.head {
		r.evictOldest()
	}
}

func (r *ring) evictOldest() {
	i := r.tail % uint64(len(r.slots))
	if f := r.slots[i]; f != nil {
		r.size.Add(-f.size.Load())
		r.slots[i] = nil
	}
	r.tail++
}

// heldBytes is how many bytes the frames held take, compressed forms
// included: what buffer_bytes bounds.
func (r *ring) heldBytes() int { return int(r.size.Load()) }

// lastID returns the stream's last event ID, and whether it has one: the
// id of the newest frame, once the origin has sent an id. It is only ever
// the origin's, never a client's cursor.
func (r *ring) lastID() (string, bool) {
	if !r.hasIDs {
		return "", false
	}
	return r.get(r.head).id, true
}

// get returns the frame with the given seq, or nil if it is not held.
func (r *ring) get(seq uint64) *frame {
	if seq < r.tail || seq > r.head {
		return nil
	}
	return r.slots[seq%uint64(len(r.slots))]
}

// backward yields the ring's frames with their seqs, newest first, among
// the newest window frames: the one backward walk that every lookup by id,
// event or rewind takes.
func (r *ring) backward(window int) iter.Seq2[uint64, *frame] {
	return func(yield func(uint64, *frame) bool) {
		for n := r.head; n >= r.tail && n > 0 && r.head-n < uint64(window); n-- {
			if f := r.get(n); f != nil && !yield(n, f) {
				return
			}
		}
	}
}

// findID returns the seq of the newest frame, among the newest window
// frames, whose last event ID is id, and reports whether there is one. A
// client that sent id as its Last-Event-ID resumes after that frame.
//
// HTTP trims spaces and tabs around a header value, so a Last-Event-ID
// header cannot carry an id that begins or ends with one: when no id
// matches exactly, an id that matches once trimmed does.
func (r *ring) findID(id string, window int) (uint64, bool) {
	for _, same := range []func(string) bool{
		func(have string) bool { return have == id },
		func(have string) bool { return strings.Trim(have, " \t") == id },
	} {
		for n, f := range r.backward(window) {
			if same(f.id) {
				return n, true
			}
		}
	}
	return 0, false
}

// findSetter returns the seq of the newest frame, among the newest window
// frames, whose own id field set the last event ID to id, and reports
// whether there is one.
func (r *ring) findSetter(id string, window int) (uint64, bool) {
	for n, f := range r.backward(window) {
		if f.setsID && f.id == id {
			return n, true
		}
	}
	return 0, false
}

// findFrame returns the seq of the newest frame, among the newest window
// frames, that is the same event as f, and reports whether there is one.
func (r *ring) findFrame(f *frame, window int) (uint64, bool) {
	for n, held := range r.backward(window) {
		if held.sameEvent(f) {
			return n, true
		}
	}
	return 0, false
}
