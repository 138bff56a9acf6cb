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
//	go run -C bench ./sseorigin -listen 127.0.0.1:9000 -rate 10 -size 256
//
// With -payload json, the padding is a JSON document instead: an order
// update of a made-up shop, about -size bytes (at least its fixed part,
// 400 to 800 bytes), whose field names repeat and whose values vary as an
// application's do, so that compression meets what it would in
// production (sseorigin.NewStampedJSON).
//
// Every path serves the stream, except /stats, which reports the number of
// open event-stream connections as JSON. With -streams N it serves N
// streams instead, named s0 to sN-1, on the paths whose last segment is a
// stream's name (/events/s3; any other is not found), each with its own
// ids counting up from 1 at -rate, and /stats sums them: the members of
// the bench's pages (streams.go). The origin takes no requests but
// GET: with -publish it does not listen at all, and POSTs each event's data
// to the given URL instead, for brokers such as nginx + nchan that are fed
// by a publisher rather than reading an origin; with -streams, to the URL
// with {stream} replaced by each stream's name (http://host/pub/{stream}).
//
// With -tls-cert and -tls-key it serves HTTPS instead of plain HTTP,
// offering h2 and http/1.1 in ALPN, and with -h3 HTTP/3 too, on the same
// port over UDP: Go's own server over the protocol a browser speaks, the
// floor that the benchmark's direct system measures.
//
// Flags:
//
//	-listen   address to listen on (default 127.0.0.1:9000)
//	-tls-cert PEM certificate file: serve HTTPS (HTTP/2 and HTTP/1.1)
//	-tls-key  PEM key file of -tls-cert
//	-h3       with -tls-cert, also serve HTTP/3 on the same port (UDP)
//	-rate     events per second (default 10; 0 sends none), of each stream
//	-streams  serve (or publish) this many streams, s0 …, each at -rate (default 1: one stream on every path)
//	-size     bytes per event on the wire, id and data lines included (default 256)
//	-payload  padding (x…, the default) or json (a JSON document after the stamp)
//	-queue    events a connection may fall behind before it is dropped (default 1024)
//	-history  events kept for Last-Event-ID (default 1024)
//	-publish  URL to POST each event's data to, instead of serving
//	-duration stop after this long (default 0: run until SIGINT or SIGTERM)
//	-state    file that keeps the last id over a restart (see below)
//
// With -state, the origin writes its last id and that event's send time
// to the file when it stops, and on start goes on from there: its ids
// count up from the next one, and its history holds the -history events
// up to the last, remade with the send times they had at -rate. An origin
// restarted with the same -state is then, to a proxy that resumes with
// Last-Event-ID, the same origin (the endurance run restarts it so).
//
// The origin itself, the clock and the event format are the package
// internal/sseorigin, which the demo (examples/demo) is built on too.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sseorigin"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:9000", "`address` to listen on")
	rate := flag.Float64("rate", 10, "events per `second`; 0 sends none")
	size := flag.Int("size", 256, "`bytes` per event on the wire, id and data lines included")
	payload := flag.String("payload", "padding", "what fills an event after its stamp: `padding` (x…) or json (a JSON document of -size bytes)")
	queue := flag.Int("queue", 1024, "`events` a connection may fall behind before it is dropped")
	history := flag.Int("history", 1024, "`events` kept for Last-Event-ID")
	publish := flag.String("publish", "", "`URL` to POST each event's data to, instead of serving")
	duration := flag.Duration("duration", 0, "stop after this long; 0 runs until SIGINT or SIGTERM")
	certFile := flag.String("tls-cert", "", "PEM certificate `file`: serve HTTPS (HTTP/2 and HTTP/1.1) instead of plain HTTP")
	keyFile := flag.String("tls-key", "", "PEM key `file` of -tls-cert")
	h3 := flag.Bool("h3", false, "with -tls-cert: also serve HTTP/3, on the same port over UDP")
	stateFile := flag.String("state", "", "`file` that keeps the last id and its time over a restart: read at the start, written at the end")
	streams := flag.Int("streams", 1, "`number` of streams, s0 … on the paths that end in their name, each at -rate with ids of its own; with -publish, to the URL with {stream} replaced by the name")
	flag.Parse()
	if *rate < 0 || *size < 0 || *queue < 1 || *history < 0 {
		log.Fatal("sseorigin: -rate and -size must not be negative, -queue must be at least 1, -history not negative")
	}
	if *payload != "padding" && *payload != "json" {
		log.Fatal("sseorigin: -payload must be padding or json")
	}
	if (*certFile == "") != (*keyFile == "") || (*h3 && *certFile == "") {
		log.Fatal("sseorigin: -tls-cert and -tls-key go together, and -h3 needs them")
	}
	if *streams < 1 || *streams > maxStreams || (*streams > 1 && *stateFile != "") {
		log.Fatalf("sseorigin: -streams must be 1 to %d, and -state is for one stream", maxStreams)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}

	c := clock{rate: *rate, size: *size, json: *payload == "json", streams: *streams}
	if *rate > 0 {
		c.interval = time.Duration(float64(time.Second) / *rate)
	}
	var err error
	if *stateFile != "" {
		if c.after, c.afterSent, err = readState(*stateFile); err != nil {
			log.Fatalf("sseorigin: %v", err)
		}
		c.state = *stateFile
	}
	if *publish != "" {
		err = c.publish(ctx, *publish)
	} else {
		var l listeners
		if l, err = listen(*addr, *certFile, *keyFile, *h3); err == nil {
			err = c.serve(ctx, l, sseorigin.Options{Queue: *queue, History: *history})
		}
	}
	if err != nil {
		log.Fatalf("sseorigin: %v", err)
	}
}

// listeners is where the origin serves: a TCP listener, with a TLS
// configuration for HTTPS, and a UDP socket for HTTP/3.
type listeners struct {
	tcp net.Listener
	tls *tls.Config    // nil: plain HTTP
	udp net.PacketConn // nil: no HTTP/3
}

// listen opens the listeners on addr: TLS with the certificate in
// certFile and keyFile unless they are empty, and HTTP/3 on the same port
// if h3. The UDP socket is bound first when the port is given, so that
// once the TCP port accepts connections HTTP/3 is ready too.
func listen(addr, certFile, keyFile string, h3 bool) (listeners, error) {
	var l listeners
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return l, err
		}
		l.tls = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	}
	var err error
	_, port, _ := net.SplitHostPort(addr)
	if h3 && port != "" && port != "0" {
		if l.udp, err = net.ListenPacket("udp", addr); err != nil {
			return l, err
		}
	}
	if l.tcp, err = net.Listen("tcp", addr); err != nil {
		if l.udp != nil {
			l.udp.Close()
		}
		return l, err
	}
	if h3 && l.udp == nil {
		if l.udp, err = net.ListenPacket("udp", l.tcp.Addr().String()); err != nil {
			l.tcp.Close()
			return l, err
		}
	}
	return l, nil
}

// clock is what the origin sends: events of size bytes, rate a second,
// on each of streams streams.
type clock struct {
	rate     float64
	interval time.Duration // 1/rate; 0 when rate is 0
	size     int
	json     bool // JSON documents instead of padding
	streams  int  // -streams; 0 counts as 1

	state     string    // -state: where the last id is written at the end
	after     uint64    // -state: the last id of the run before; ids go on after it
	afterSent time.Time // its send time
}

// run publishes a stamped event every interval until ctx ends.
func (c clock) run(ctx context.Context, publish func(*sseorigin.Stamped)) {
	c.runStreams(ctx, func(_ int, ev *sseorigin.Stamped) { publish(ev) })
}

// runStreams publishes a stamped event of each of the clock's streams
// every interval until ctx ends, the streams in turn, evenly spread over
// the interval (see streams.go); each stream's ids count up on their own.
func (c clock) runStreams(ctx context.Context, publish func(stream int, ev *sseorigin.Stamped)) {
	n := max(c.streams, 1)
	sseorigin.RunClock(ctx, c.interval/time.Duration(n), func(tick uint64) {
		stream, seq := tickStream(tick, n)
		publish(stream, c.event(c.after+seq, time.Now()))
	})
}

// event is event seq, sent at sent.
func (c clock) event(seq uint64, sent time.Time) *sseorigin.Stamped {
	if c.json {
		return sseorigin.NewStampedJSON(seq, sent, c.size)
	}
	return sseorigin.NewStamped(seq, sent, c.size)
}

// history is the events up to c.after, at most n, as the run before sent
// them (-state): what a restarted origin keeps for Last-Event-ID.
func (c clock) history(n int) []*sseorigin.Stamped {
	var out []*sseorigin.Stamped
	first := uint64(1)
	if c.after > uint64(n) {
		first = c.after - uint64(n) + 1
	}
	for seq := first; seq <= c.after && c.after > 0; seq++ {
		out = append(out, c.event(seq, c.afterSent.Add(-time.Duration(c.after-seq)*c.interval)))
	}
	return out
}

// readState reads a -state file: "<last id> <its send time, Unix ns>". A
// missing file is a first start.
func readState(name string) (uint64, time.Time, error) {
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return 0, time.Time{}, nil
	}
	if err != nil {
		return 0, time.Time{}, err
	}
	var seq uint64
	var ns int64
	if _, err := fmt.Sscan(string(b), &seq, &ns); err != nil {
		return 0, time.Time{}, fmt.Errorf("-state %s: %v", name, err)
	}
	return seq, time.Unix(0, ns), nil
}

// writeState writes a -state file, by a rename so that a reader never
// sees half of it.
func writeState(name string, seq uint64, sent time.Time) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", seq, sent.UnixNano()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// serve sends the clock's events to every connection on l until ctx
// ends. Over TLS it speaks HTTP/2 and HTTP/1.1, as ALPN settles, and
// HTTP/3 on l.udp if there is one.
func (c clock) serve(ctx context.Context, l listeners, opts sseorigin.Options) error {
	set := make(streamSet, max(c.streams, 1))
	for k := range set {
		set[k] = sseorigin.New(opts)
	}
	var handler http.Handler = set
	if len(set) == 1 {
		handler = set[0] // the stream on every path
		for _, ev := range c.history(opts.History) {
			set[0].Publish(ev) // no connection yet: it only fills the history
		}
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 2)
	scheme, also := "http", ""
	if l.tls != nil {
		scheme, also = "https", ", HTTP/2 and HTTP/1.1"
		srv.TLSConfig = l.tls.Clone() // ServeTLS amends it, while HTTP/3 clones l.tls
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetHTTP2(true)
		go func() { serveErr <- srv.ServeTLS(l.tcp, "", "") }()
	} else {
		go func() { serveErr <- srv.Serve(l.tcp) }()
	}
	var h3srv *http3.Server
	if l.udp != nil {
		also += ", HTTP/3 on UDP"
		h3srv = &http3.Server{Handler: handler, TLSConfig: http3.ConfigureTLSConfig(l.tls.Clone())}
		go func() { serveErr <- h3srv.Serve(l.udp) }()
	}
	streams := ""
	if len(set) > 1 {
		streams = fmt.Sprintf(", %d streams s0 to s%d", len(set), len(set)-1)
	}
	fmt.Printf("sseorigin: serving on %s://%s/%s%s at %g events/s of %d bytes (stats: /stats)\n", scheme, l.tcp.Addr(), also, streams, c.rate, c.size)

	clockCtx, stopClock := context.WithCancel(ctx)
	clockDone := make(chan struct{})
	last, lastSent := c.after, c.afterSent
	go func() {
		defer close(clockDone)
		c.runStreams(clockCtx, func(stream int, ev *sseorigin.Stamped) {
			set[stream].Publish(ev)
			last, lastSent = ev.Seq(), time.Now()
		})
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	stopClock()
	<-clockDone
	if c.state != "" {
		if werr := writeState(c.state, last, lastSent); werr != nil {
			log.Printf("sseorigin: writing -state: %v", werr)
		}
	}
	set.Close()
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown) // the streams are ended; idle connections go too
	if h3srv != nil {
		_ = h3srv.Close()
		l.udp.Close()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
