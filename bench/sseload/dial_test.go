package main

// Tests of -url lists and -source-addrs: the clients are spread over the
// targets in turn, and their connections over the source addresses.

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sseorigin"
)

func TestParseSourceAddrs(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"", "", ""},
		{"127.0.0.1-127.0.0.4", "127.0.0.1 127.0.0.2 127.0.0.3 127.0.0.4", ""},
		{"127.0.0.1, 127.0.0.9", "127.0.0.1 127.0.0.9", ""},
		{"127.0.0.254-127.0.1.1", "127.0.0.254 127.0.0.255 127.0.1.0 127.0.1.1", ""},
		{"127.0.0.5-127.0.0.1", "", "does not count up"},
		{"127.0.0.1-::1", "", "does not count up"},
		{"127.0.0.1-127.0.2.0", "", "more than 256"},
		{"localhost", "", "-source-addrs"},
	} {
		got, err := parseSourceAddrs(tc.in)
		var s []string
		for _, a := range got {
			s = append(s, a.String())
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseSourceAddrs(%q) = %v, %v; want an error with %q", tc.in, s, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(s, " ") != tc.want {
			t.Errorf("parseSourceAddrs(%q) = %v, %v; want %s", tc.in, s, err, tc.want)
		}
	}
}

func TestRequestBytesResumes(t *testing.T) {
	tg := newTarget(mustURL(t, "http://127.0.0.1/events?x=1"), "gzip")
	if tg.url.Host != "127.0.0.1:80" {
		t.Errorf("host %q, want the port added", tg.url.Host)
	}
	fresh, resumed := string(tg.requestBytes(0)), string(tg.requestBytes(42))
	if strings.Contains(fresh, "Last-Event-ID") || !strings.HasPrefix(fresh, "GET /events?x=1 HTTP/1.1\r\n") || !strings.HasSuffix(fresh, "gzip\r\n\r\n") {
		t.Errorf("fresh request %q", fresh)
	}
	if !strings.HasSuffix(resumed, "\r\nLast-Event-ID: 42\r\n\r\n") {
		t.Errorf("resumed request %q, want it to end with Last-Event-ID: 42", resumed)
	}
}

// addrServer is an event origin on 127.0.0.1 that counts its connections
// by the client's address and the requests by path.
type addrServer struct {
	*httptest.Server
	mu    sync.Mutex
	ips   map[string]int
	paths map[string]int
}

func newAddrServer(t *testing.T, tlsH2 bool) *addrServer {
	t.Helper()
	s := &addrServer{ips: make(map[string]int), paths: make(map[string]int)}
	o := sseorigin.New(sseorigin.Options{Queue: 256, History: 4096})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sseorigin.RunClock(ctx, 5*time.Millisecond, func(seq uint64) {
			o.Publish(sseorigin.NewStamped(seq, time.Now(), 96))
		})
	}()
	t.Cleanup(func() { cancel(); <-done; o.Close() })
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.paths[r.URL.Path]++
		s.mu.Unlock()
		o.ServeHTTP(w, r)
	}))
	s.Config.ConnState = func(c net.Conn, state http.ConnState) {
		if state == http.StateNew {
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			s.mu.Lock()
			s.ips[host]++
			s.mu.Unlock()
		}
	}
	if tlsH2 {
		cert, _ := selfSigned(t)
		s.EnableHTTP2 = true
		s.TLS = newTLSConfig(cert)
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// canBind reports whether this machine routes 127.0.0.2 to loopback, as
// Linux does for all of 127/8.
func canBind(t *testing.T) bool {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: time.Second}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestSourceAddrsSpreadH1(t *testing.T) {
	if !canBind(t) {
		t.Skip("cannot connect from 127.0.0.2 here")
	}
	srv := newAddrServer(t, false)
	cfg := &config{
		url: srv.URL + "/a," + srv.URL + "/b", clients: 6, ramp: 1000, proto: protoH1, streamsPerConn: 1,
		sourceAddrs: "127.0.0.1-127.0.0.3", duration: 200 * time.Millisecond, connectTimeout: 5 * time.Second,
	}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	rep, err := run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkDelivered(t, rep)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, ip := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		if srv.ips[ip] != 2 {
			t.Errorf("connections by address %v, want 2 from each of 127.0.0.1-3", srv.ips)
			break
		}
	}
	if srv.paths["/a"] != 3 || srv.paths["/b"] != 3 {
		t.Errorf("requests by path %v, want 3 on each -url", srv.paths)
	}
}

func TestSourceAddrsSpreadH2StreamsPerConn(t *testing.T) {
	if !canBind(t) {
		t.Skip("cannot connect from 127.0.0.2 here")
	}
	srv := newAddrServer(t, true)
	cfg := &config{
		url: srv.URL + "/events", clients: 8, ramp: 1000, proto: protoH2, streamsPerConn: 4, insecure: true,
		sourceAddrs: "127.0.0.1,127.0.0.2", duration: 200 * time.Millisecond, connectTimeout: 5 * time.Second,
	}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	rep, err := run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkDelivered(t, rep)
	if rep.Conns.Opened != 2 || rep.Conns.ALPN["h2"] != 2 {
		t.Errorf("connections %+v, want 2 h2 connections for 8 streams at 4 each", rep.Conns)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.ips["127.0.0.1"] != 1 || srv.ips["127.0.0.2"] != 1 || srv.paths["/events"] != 8 {
		t.Errorf("connections by address %v, requests %v; want one connection from each address, 8 streams", srv.ips, srv.paths)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// newTLSConfig is a server's TLS configuration with cert, offering h2.
func newTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
}
