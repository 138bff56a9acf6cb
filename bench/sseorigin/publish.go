package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sseorigin"
)

// publish POSTs each event's data (what the served stream has after
// "data: ") to target until ctx ends. The POSTs are pipelined on one
// keep-alive connection: each is sent on time without waiting for the
// answer to the one before, and the server handles them in order, so a
// busy server cannot slow the publishing rate down (a request-response
// loop would publish fewer events exactly when the server is loaded).
// Answers are read, and failures logged, as they come. It stops early,
// with the error, if the connection fails. With several streams, each
// stream's events go to target with {stream} replaced by its name, all on
// the one connection.
func (c clock) publish(ctx context.Context, target string) error {
	targets, err := publishTargets(target, max(c.streams, 1))
	if err != nil {
		return err
	}
	u := targets[0]
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
	go func() { readErr <- readAnswers(conn) }()

	streams := ""
	if len(targets) > 1 {
		streams = fmt.Sprintf(", %d streams s0 to s%d", len(targets), len(targets)-1)
	}
	fmt.Printf("sseorigin: publishing to %s%s at %g events/s of %d bytes\n", target, streams, c.rate, c.size)
	heads := make([]string, len(targets))
	for k, t := range targets {
		heads[k] = "POST " + t.RequestURI() + " HTTP/1.1\r\nHost: " + t.Host + "\r\nContent-Type: text/plain\r\nContent-Length: "
	}
	clockCtx, stopClock := context.WithCancel(ctx)
	defer stopClock()
	var failed error
	var req []byte
	c.runStreams(clockCtx, func(stream int, ev *sseorigin.Stamped) {
		select {
		case failed = <-readErr:
			stopClock()
			return
		default:
		}
		data := ev.Data()
		req = append(req[:0], heads[stream]...)
		req = strconv.AppendInt(req, int64(len(data)), 10)
		req = append(req, "\r\n\r\n"...)
		req = append(req, data...)
		if _, err := conn.Write(req); err != nil {
			failed = err
			stopClock()
		}
	})
	if ctx.Err() != nil {
		return nil
	}
	return failed
}

// readAnswers reads the server's answers to the pipelined POSTs until the
// connection fails or closes, and logs those that are not a success.
func readAnswers(conn net.Conn) error {
	br := bufio.NewReader(conn)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			log.Printf("sseorigin: publishing: %s", resp.Status)
		}
	}
}
