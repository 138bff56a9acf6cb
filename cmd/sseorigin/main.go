// Command sseorigin is a Server-Sent Events origin for benchmarks and
// demos. One clock sends every connection the same events, at a fixed rate
// and size, each stamped with its send time:
//
//	id: 42
//	data: 42 1767225600123456789 xxxxxxxx…
//
// The data is the event's sequence number (the same as its id), its send
// time in Unix nanoseconds, and padding up to the event's size on the wire.
// Ids count up from 1 and are shared by all connections, and the origin
// keeps the last events it sent, so a client that reconnects with
// Last-Event-ID resumes where it left off when the origin still has it.
//
//	go run ./cmd/sseorigin -listen 127.0.0.1:9000 -rate 10 -size 256
//
// Every path serves the stream, except /stats, which reports the number of
// open event-stream connections as JSON. The origin takes no requests but
// GET: with -publish it does not listen at all, and POSTs each event's data
// to the given URL instead, for brokers such as nginx + nchan that are fed
// by a publisher rather than reading an origin.
//
// Flags:
//
//	-listen   address to listen on (default 127.0.0.1:9000)
//	-rate     events per second (default 10; 0 sends none)
//	-size     bytes per event on the wire, id and data lines included (default 256)
//	-queue    events a connection may fall behind before it is dropped (default 1024)
//	-history  events kept for Last-Event-ID (default 1024)
//	-publish  URL to POST each event's data to, instead of serving
//	-duration stop after this long (default 0: run until SIGINT or SIGTERM)
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "`address` to listen on")
	rate := flag.Float64("rate", 10, "events per `second`; 0 sends none")
	size := flag.Int("size", 256, "`bytes` per event on the wire, id and data lines included")
	queue := flag.Int("queue", 1024, "`events` a connection may fall behind before it is dropped")
	history := flag.Int("history", 1024, "`events` kept for Last-Event-ID")
	publish := flag.String("publish", "", "`URL` to POST each event's data to, instead of serving")
	duration := flag.Duration("duration", 0, "stop after this long; 0 runs until SIGINT or SIGTERM")
	flag.Parse()
	if *rate < 0 || *size < 0 || *queue < 1 || *history < 0 {
		log.Fatal("sseorigin: -rate and -size must not be negative, -queue must be at least 1, -history not negative")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}

	o := newOrigin(*size, *queue, *history)
	if *publish != "" {
		if err := o.runPublisher(ctx, *publish, *rate); err != nil {
			log.Fatalf("sseorigin: %v", err)
		}
		return
	}
	if err := o.serve(ctx, *listen, *rate); err != nil {
		log.Fatalf("sseorigin: %v", err)
	}
}

// event is one event, encoded once and shared by every connection.
type event struct {
	seq  uint64
	wire []byte // id and data lines and the blank line; never modified
}

// origin holds the clock's state and the open connections.
type origin struct {
	size    int
	queue   int
	history int

	conns     atomic.Int64  // event-stream connections open now
	total     atomic.Int64  // event-stream connections served since the start
	dropped   atomic.Int64  // connections dropped for falling behind
	published atomic.Uint64 // events sent by the clock

	mu   sync.Mutex
	subs map[chan *event]struct{}
	past []*event // the last history events, oldest first
}

func newOrigin(size, queue, history int) *origin {
	return &origin{size: size, queue: queue, history: history, subs: make(map[chan *event]struct{})}
}

// serve listens on addr and sends events at rate until ctx ends.
func (o *origin) serve(ctx context.Context, addr string, rate float64) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: o, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Printf("sseorigin: serving on http://%s/ at %g events/s of %d bytes (stats: /stats)\n", ln.Addr(), rate, o.size)

	clockDone := make(chan struct{})
	go func() {
		defer close(clockDone)
		o.runClock(ctx, rate, o.broadcast)
	}()
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	<-clockDone
	o.closeAll()
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown) // the streams are ended; idle connections go too
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// runClock calls emit for event 1, 2, … at rate events per second until
// ctx ends. It catches up after a late wake-up rather than drifting, so the
// long-run rate is exact.
func (o *origin) runClock(ctx context.Context, rate float64, emit func(*event)) {
	if rate <= 0 {
		<-ctx.Done()
		return
	}
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	var seq uint64
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		due := uint64(time.Since(start)/interval) + 1
		for seq < due && ctx.Err() == nil {
			seq++
			emit(o.encode(seq))
		}
		timer.Reset(time.Until(start.Add(time.Duration(seq) * interval)))
	}
}

// encode builds event seq, stamped now: "id: seq\ndata: seq nanos pad\n\n".
func (o *origin) encode(seq uint64) *event {
	b := make([]byte, 0, max(o.size, 64))
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, "\ndata: "...)
	b = appendData(b, seq, time.Now().UnixNano(), o.size-len(b)-2)
	b = append(b, "\n\n"...)
	return &event{seq: seq, wire: b}
}

// appendData appends "seq nanos" and, when room is larger than that, a
// space and padding up to room bytes.
func appendData(b []byte, seq uint64, nanos int64, room int) []byte {
	from := len(b)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, nanos, 10)
	if pad := room - (len(b) - from) - 1; pad > 0 {
		b = append(b, ' ')
		b = append(b, bytes.Repeat([]byte{'x'}, pad)...)
	}
	return b
}

// broadcast hands ev to every connection and keeps it for Last-Event-ID.
// A connection whose queue is full is dropped, so that none holds up the
// others.
func (o *origin) broadcast(ev *event) {
	o.published.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.history > 0 {
		if len(o.past) == o.history {
			copy(o.past, o.past[1:])
			o.past = o.past[:len(o.past)-1]
		}
		o.past = append(o.past, ev)
	}
	for ch := range o.subs {
		select {
		case ch <- ev:
		default:
			delete(o.subs, ch)
			close(ch)
			o.dropped.Add(1)
		}
	}
}

// subscribe registers a connection that last saw event after (0: none),
// and returns the kept events after it along with the connection's queue.
func (o *origin) subscribe(after uint64) ([]*event, chan *event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var replay []*event
	if after > 0 {
		for _, ev := range o.past {
			if ev.seq > after {
				replay = append(replay, ev)
			}
		}
	}
	ch := make(chan *event, o.queue)
	o.subs[ch] = struct{}{}
	return replay, ch
}

// unsubscribe removes a connection that is leaving; whoever removes a
// queue from subs closes it, so it is closed once.
func (o *origin) unsubscribe(ch chan *event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.subs[ch]; ok {
		delete(o.subs, ch)
		close(ch)
	}
}

// closeAll ends every open stream.
func (o *origin) closeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for ch := range o.subs {
		delete(o.subs, ch)
		close(ch)
	}
}

// ServeHTTP serves /stats, and the event stream on every other path.
func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == "/stats" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(o.stats())
		return
	}
	o.serveEvents(w, r)
}

// stats is what /stats reports.
type stats struct {
	Connections      int64  `json:"connections"`       // event-stream connections open now
	ConnectionsTotal int64  `json:"connections_total"` // served since the start
	Dropped          int64  `json:"dropped"`           // dropped for falling more than -queue events behind
	Events           uint64 `json:"events"`            // events sent by the clock
}

func (o *origin) stats() stats {
	return stats{
		Connections:      o.conns.Load(),
		ConnectionsTotal: o.total.Load(),
		Dropped:          o.dropped.Load(),
		Events:           o.published.Load(),
	}
}

// serveEvents streams events to one connection until it goes away or the
// origin stops. Events that queued up meanwhile go out in one write.
func (o *origin) serveEvents(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64)
	replay, ch := o.subscribe(after)
	defer o.unsubscribe(ch)
	o.conns.Add(1)
	defer o.conns.Add(-1)
	o.total.Add(1)

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	buf := make([]byte, 0, 4096)
	for _, ev := range replay {
		buf = append(buf, ev.wire...)
	}
	for {
		if len(buf) > 0 {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
		buf = buf[:0]
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return // the origin stopped, or this connection fell behind
			}
			buf = append(buf, ev.wire...)
		}
		for len(buf) < 64<<10 {
			select {
			case ev, ok := <-ch:
				if !ok {
					return
				}
				buf = append(buf, ev.wire...)
				continue
			default:
			}
			break
		}
	}
}

// runPublisher POSTs each event's data (what the served stream has after
// "data: ") to target at rate events per second until ctx ends. The POSTs
// are pipelined on one keep-alive connection: each is sent on time without
// waiting for the answer to the one before, and the server handles them in
// order, so a busy server cannot slow the publishing rate down (a
// request-response loop would publish fewer events exactly when the
// server is loaded). Answers are read, and failures logged, as they come.
func (o *origin) runPublisher(ctx context.Context, target string, rate float64) error {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("-publish needs an http:// URL, got %q", target)
	}
	conn, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	defer conn.Close()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	readErr := make(chan error, 1)
	go func() {
		br := bufio.NewReader(conn)
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				readErr <- err
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 300 {
				log.Printf("sseorigin: publishing: %s", resp.Status)
			}
		}
	}()

	fmt.Printf("sseorigin: publishing to %s at %g events/s of %d bytes\n", target, rate, o.size)
	head := "POST " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nContent-Type: text/plain\r\nContent-Length: "
	var failed error
	var req []byte
	o.runClock(ctx, rate, func(ev *event) {
		if failed != nil {
			return
		}
		select {
		case failed = <-readErr:
			return
		default:
		}
		// The data is what follows "data: " in ev.wire, before "\n\n".
		data := ev.wire[bytes.Index(ev.wire, []byte("data: "))+len("data: ") : len(ev.wire)-2]
		req = append(req[:0], head...)
		req = strconv.AppendInt(req, int64(len(data)), 10)
		req = append(req, "\r\n\r\n"...)
		req = append(req, data...)
		if _, err := conn.Write(req); err != nil {
			failed = err
			return
		}
		o.published.Add(1)
	})
	if ctx.Err() != nil {
		return nil
	}
	return failed
}
