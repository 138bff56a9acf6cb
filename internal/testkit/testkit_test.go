package testkit

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard" // the Caddyfile and respond
)

func TestMain(m *testing.M) { Main(m) }

// TestPassingRunPrintsNothing runs this test binary again on a test that
// starts Caddy, and checks that it prints nothing but its PASS: so a
// failing run's first line is its first failure. Caddy's first logger
// wrote a line to stderr when the first config moved the log to a file.
func TestPassingRunPrintsNothing(t *testing.T) {
	ExpectQuietRun(t, "^TestCaddyStartsAndStops$")
}

// TestCaddyStartsAndStops starts Caddy with a site under the tests'
// global options, and stops it.
func TestCaddyStartsAndStops(t *testing.T) {
	StartCaddy(t, "respond ok")
}

// Metrics are the process's and are labelled by upstream URL, so an
// origin that listened where an earlier test's origin had would inherit
// that test's counts (CI: a test saw the 50 clients another test had
// cut). No two origins of a test process share an address, nor two
// ports FreePort gives.
func TestOriginsNeverShareAnAddress(t *testing.T) {
	const n = 1000
	seen := make(map[string]bool, 2*n)
	for i := range n {
		var url string
		t.Run(strconv.Itoa(i), func(t *testing.T) { url = NewOrigin(t).URL() })
		if seen[url] {
			t.Fatalf("origin %d listens at %s, where an earlier origin did", i, url)
		}
		seen[url] = true
	}
	for i := range n {
		port := strconv.Itoa(FreePort(t))
		if seen[port] {
			t.Fatalf("FreePort gave %s a second time (call %d)", port, i)
		}
		seen[port] = true
	}
}

// A connection that the server of a config being stopped took is closed
// unanswered, at times with a reset (CI: "read: connection reset by
// peer" just after a reload); DialClient asks again, as for an EOF.
func TestDialClientAsksAgainAfterAReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		for i := range 2 {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			r := bufio.NewReader(conn)
			for { // the request's head
				line, err := r.ReadString('\n')
				if err != nil || line == "\r\n" {
					break
				}
			}
			if i == 0 { // the first goes unanswered, with a reset
				conn.(*net.TCPConn).SetLinger(0)
				conn.Close()
				continue
			}
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
			io.Copy(io.Discard, r) // until the client closes
			conn.Close()
		}
	}()
	c, status := DialClient(t, "http://"+ln.Addr().String()+"/events", nil)
	if status != http.StatusOK {
		t.Fatalf("status %d, want 200", status)
	}
	c.Close()
	<-served
}
