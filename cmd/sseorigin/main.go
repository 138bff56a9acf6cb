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
//
// The origin itself, the clock and the event format are the package
// internal/sseorigin, which the demo (examples/demo) is built on too.
package main

import (
	"context"
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

	"github.com/sse-fanout/caddy-sse-fanout/internal/sseorigin"
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

	c := clock{rate: *rate, size: *size}
	if *rate > 0 {
		c.interval = time.Duration(float64(time.Second) / *rate)
	}
	var err error
	if *publish != "" {
		err = c.publish(ctx, *publish)
	} else {
		err = c.serve(ctx, *listen, sseorigin.Options{Queue: *queue, History: *history})
	}
	if err != nil {
		log.Fatalf("sseorigin: %v", err)
	}
}

// clock is what the origin sends: events of size bytes, rate a second.
type clock struct {
	rate     float64
	interval time.Duration // 1/rate; 0 when rate is 0
	size     int
}

// run publishes a stamped event every interval until ctx ends.
func (c clock) run(ctx context.Context, publish func(*sseorigin.Stamped)) {
	sseorigin.RunClock(ctx, c.interval, func(seq uint64) {
		publish(sseorigin.NewStamped(seq, time.Now(), c.size))
	})
}

// serve listens on addr and sends the clock's events to every connection
// until ctx ends.
func (c clock) serve(ctx context.Context, addr string, opts sseorigin.Options) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	o := sseorigin.New(opts)
	srv := &http.Server{Handler: o, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Printf("sseorigin: serving on http://%s/ at %g events/s of %d bytes (stats: /stats)\n", ln.Addr(), c.rate, c.size)

	clockCtx, stopClock := context.WithCancel(ctx)
	clockDone := make(chan struct{})
	go func() {
		defer close(clockDone)
		c.run(clockCtx, func(ev *sseorigin.Stamped) { o.Publish(ev) })
	}()
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	stopClock()
	<-clockDone
	o.Close()
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown) // the streams are ended; idle connections go too
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
