package testkit

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
)

// This file is the SSE client of the tests.

// Client is an SSE client reading a proxied stream with our parser in
// a goroutine of its own. The blocks it has read and the test has not yet
// taken wait in a queue that grows with them and is let go by Close, so a
// client costs memory for what it holds, not for what it might (a test
// that cycles thousands of clients keeps each one until it ends).
type Client struct {
	Resp       *http.Response
	Keepalives chan struct{}
	Ended      chan struct{} // closed when the reader returns
	Err        error         // why the reader returned; read after Ended
	cancel     context.CancelFunc

	mu      sync.Mutex
	queue   []sse.Event   // read and not yet taken, oldest first
	arrived chan struct{} // signalled (never blocking) when queue grows
}

// reloadRetries bounds how often DialClient asks again when a connection
// closes unanswered, as one the old config's server took during a reload.
const reloadRetries = 3

// HTTPClient is shared by the tests' SSE clients. It keeps no connection
// idle, so a test leaves nothing behind.
var HTTPClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// TLSHTTPClient is HTTPClient for https URLs: HTTP/1.1 over TLS, trusting
// any certificate (the tests' own, CertFile).
var TLSHTTPClient = &http.Client{Transport: &http.Transport{
	DisableKeepAlives: true,
	TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
	TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{}, // no HTTP/2
}}

// OpenClient connects to url and fails the test unless it gets a stream.
func OpenClient(t testing.TB, url string, header http.Header) *Client {
	t.Helper()
	c, status := DialClient(t, url, header)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200", url, status)
	}
	return c
}

// DialClient connects to url; for a non-200 answer it returns the status
// and a nil client.
func DialClient(t testing.TB, url string, header http.Header) (*Client, int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	hc := HTTPClient
	if strings.HasPrefix(url, "https:") {
		hc = TLSHTTPClient
	}
	resp, err := hc.Do(req)
	for try := 1; err != nil && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) && try < reloadRetries; try++ {
		// A connection accepted by the server of a config that a reload
		// is stopping is closed unanswered, or reset (Caddy's servers
		// share their listener across a reload); a browser asks again,
		// and so do we.
		resp, err = hc.Do(req)
	}
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode
	}
	c := &Client{
		Resp:       resp,
		Keepalives: make(chan struct{}, 1000),
		Ended:      make(chan struct{}),
		cancel:     cancel,
		arrived:    make(chan struct{}, 1),
	}
	t.Cleanup(c.Close)
	go c.read(header.Get("Last-Event-ID"))
	return c, resp.StatusCode
}

// read parses the stream as an EventSource that reconnected with
// lastEventID would: the stream's events without an id carry it.
func (c *Client) read(lastEventID string) {
	defer close(c.Ended)
	body := io.TeeReader(c.Resp.Body, &keepaliveSpotter{found: c.Keepalives})
	p := sse.NewParser(body, 16<<20)
	p.SetLastID(lastEventID)
	for {
		ev, err := p.Next()
		if err != nil {
			c.Err = err
			return
		}
		c.mu.Lock()
		c.queue = append(c.queue, ev)
		c.mu.Unlock()
		select {
		case c.arrived <- struct{}{}:
		default:
		}
	}
}

// Close disconnects the client, waits for its reader and lets go of what
// it had read and the test had not taken.
func (c *Client) Close() {
	c.cancel()
	<-c.Ended
	c.Resp.Body.Close()
	c.mu.Lock()
	c.queue = nil
	c.mu.Unlock()
}

// take returns the oldest block read and not yet taken, if there is one.
func (c *Client) take() (sse.Event, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		return sse.Event{}, false
	}
	ev := c.queue[0]
	c.queue[0] = sse.Event{}
	c.queue = c.queue[1:]
	if len(c.queue) == 0 {
		c.queue = nil // the next append starts a small slice again
	}
	return ev, true
}

// Pending is how many blocks the client has read that the test has not
// taken yet.
func (c *Client) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// Poll waits up to timeout for the next block. It reports false when none
// came in that time or the stream ended with none left to take.
func (c *Client) Poll(timeout time.Duration) (sse.Event, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		if ev, ok := c.take(); ok {
			return ev, true
		}
		select {
		case <-c.arrived:
		case <-c.Ended:
			return c.take() // the reader's last block may have come with its end
		case <-timer.C:
			return c.take()
		}
	}
}

// NextEvent returns the next block that fires an event or moves the cursor.
func (c *Client) NextEvent(t testing.TB) sse.Event {
	t.Helper()
	for {
		ev := c.NextBlock(t)
		if ev.HasData || ev.HasID {
			return ev
		}
	}
}

// NextBlock returns the next block of any kind, retry-only ones included.
func (c *Client) NextBlock(t testing.TB) sse.Event {
	t.Helper()
	if ev, ok := c.Poll(WaitTimeout); ok {
		return ev
	}
	select {
	case <-c.Ended:
		t.Fatalf("stream ended while waiting for an event: %v", c.Err)
	default:
		t.Fatal("no event arrived")
	}
	return sse.Event{}
}

// WaitKeepalive waits for a keepalive comment.
func (c *Client) WaitKeepalive(t testing.TB) {
	t.Helper()
	select {
	case <-c.Keepalives:
	case <-time.After(WaitTimeout):
		t.Fatal("no keepalive arrived")
	}
}

// WaitEnded waits until the server ends the stream.
func (c *Client) WaitEnded(t testing.TB) {
	t.Helper()
	select {
	case <-c.Ended:
	case <-time.After(WaitTimeout):
		t.Fatal("stream was not ended")
	}
}

// keepaliveSpotter is an io.Writer that signals each ": keepalive" comment
// in the bytes written to it, wherever reads split them.
type keepaliveSpotter struct {
	carry []byte
	found chan<- struct{}
}

func (k *keepaliveSpotter) Write(b []byte) (int, error) {
	pattern := []byte(": keepalive\n")
	buf := append(k.carry, b...)
	for {
		i := bytes.Index(buf, pattern)
		if i < 0 {
			break
		}
		select {
		case k.found <- struct{}{}:
		default:
		}
		buf = buf[i+len(pattern):]
	}
	if keep := len(pattern) - 1; len(buf) > keep {
		buf = buf[len(buf)-keep:]
	}
	k.carry = append(k.carry[:0], buf...)
	return len(b), nil
}

// NextData returns the next event that fires, skipping id-only blocks.
func (c *Client) NextData(t testing.TB) sse.Event {
	t.Helper()
	for {
		if ev := c.NextEvent(t); ev.HasData {
			return ev
		}
	}
}

// ExpectIDs reads events and fails unless they are exactly those SendIDs
// sends from from to to.
func (c *Client) ExpectIDs(t testing.TB, from, to int) {
	t.Helper()
	for want := from; want <= to; want++ {
		ev := c.NextData(t)
		if ev.ID != strconv.Itoa(want) || ev.Data != "event "+strconv.Itoa(want) {
			t.Fatalf("got id %q data %q, want event %d", ev.ID, ev.Data, want)
		}
	}
}

// Get asks for url with HTTPClient, bounded by WaitTimeout, and fails if
// no answer comes; the test's cleanup closes the body.
func Get(t testing.TB, url string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := HTTPClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// LastEventID is a request header with the given Last-Event-ID.
func LastEventID(id string) http.Header { return http.Header{"Last-Event-ID": {id}} }

// StartStream opens a witness client on url, has the origin send ids 1..n
// and waits until the witness has them all, so that the buffer holds them.
func StartStream(t testing.TB, origin *Origin, url string, n int) (*OriginConn, *Client) {
	t.Helper()
	witness := OpenClient(t, url, nil)
	up := origin.NextConn(t)
	for i := 1; i <= n; i += 4 { // in steps, so the witness never lags
		to := min(i+3, n)
		SendIDs(up, i, to)
		witness.ExpectIDs(t, i, to)
	}
	return up, witness
}

// ParseAll reads r to its end with the plugin's parser and returns every
// block it returned and the error that stopped it.
func ParseAll(r io.Reader, maxSize int) ([]sse.Event, error) {
	p := sse.NewParser(r, maxSize)
	var evs []sse.Event
	for {
		ev, err := p.Next()
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
}
