package main

// Tests of -proto and -streams-per-conn: each protocol against a server on
// 127.0.0.1 that streams sseorigin's events, checking what the server saw
// (connections, HTTP versions) as well as what the report says.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sseorigin"
)

// selfSigned makes a certificate for 127.0.0.1 and writes it as PEM to a
// file, for -cacert.
func selfSigned(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, file
}

// seen is what a test server saw: its connections and the HTTP version of
// each event-stream request.
type seen struct {
	mu     sync.Mutex
	conns  int
	protos map[string]int
}

func (s *seen) request(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.protos[r.Proto]++
}

func (s *seen) get() (int, map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int)
	for k, v := range s.protos {
		out[k] = v
	}
	return s.conns, out
}

// eventOrigin is an sseorigin.Origin publishing an event every 5ms until
// the test ends, behind a handler that records each request in s.
func eventOrigin(t *testing.T, s *seen) http.Handler {
	t.Helper()
	o := sseorigin.New(sseorigin.Options{Queue: 256})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sseorigin.RunClock(ctx, 5*time.Millisecond, func(seq uint64) {
			o.Publish(sseorigin.NewStamped(seq, time.Now(), 128))
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		o.Close()
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.request(r)
		o.ServeHTTP(w, r)
	})
}

// tlsServer serves the events over TLS with cert, offering h2 in ALPN
// only if h2 is set.
func tlsServer(t *testing.T, cert tls.Certificate, h2 bool) (*httptest.Server, *seen) {
	t.Helper()
	s := &seen{protos: make(map[string]int)}
	srv := httptest.NewUnstartedServer(eventOrigin(t, s))
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
		}
	}
	srv.EnableHTTP2 = h2
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	if h2 {
		srv.TLS.NextProtos = []string{"h2", "http/1.1"}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close) // registered after eventOrigin's: runs before it
	return srv, s
}

// h3Server serves the events over HTTP/3 on 127.0.0.1 with cert.
func h3Server(t *testing.T, cert tls.Certificate) (string, *seen) {
	t.Helper()
	s := &seen{protos: make(map[string]int)}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http3.Server{
		Handler:   eventOrigin(t, s),
		TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
		ConnContext: func(ctx context.Context, _ *quic.Conn) context.Context {
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			return ctx
		},
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(udp) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("http3 server: %v", err)
		}
		udp.Close()
	})
	return "https://" + udp.LocalAddr().String() + "/events", s
}

// runLoad runs sseload's measurement with proto against url, briefly.
func runLoad(t *testing.T, proto, url, cacert string, clients, streams int) *report {
	t.Helper()
	cfg := &config{
		url: url, clients: clients, ramp: 1000, proto: proto, streamsPerConn: streams, cacert: cacert,
		duration: 300 * time.Millisecond, connectTimeout: 5 * time.Second,
	}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	rep, err := run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// checkDelivered checks that every stream connected, stayed, and got its
// events without loss.
func checkDelivered(t *testing.T, rep *report) {
	t.Helper()
	c := rep.Clients
	if c.Connected != int64(c.Wanted) || c.Held != int64(c.Wanted) || c.Failed != 0 || c.Silent != 0 {
		t.Errorf("clients: %+v, want all %d connected and held; errors %v", c, c.Wanted, rep.Errors)
	}
	if rep.Events.Delivered == 0 || rep.Events.Lost != 0 || rep.Events.Foreign != 0 {
		t.Errorf("events: %+v, want some delivered, none lost", rep.Events)
	}
}

func TestProtoH2SharesConnections(t *testing.T) {
	cert, cacert := selfSigned(t)
	srv, s := tlsServer(t, cert, true)
	rep := runLoad(t, protoH2, srv.URL+"/events", cacert, 6, 3)
	checkDelivered(t, rep)
	if n := rep.Conns; n.Wanted != 2 || n.Opened != 2 || n.WrongProto != 0 || n.ALPN["h2"] != 2 {
		t.Errorf("connections: %+v, want 2 opened, both h2", n)
	}
	if rep.Proto != protoH2 || rep.StreamsPerConn != 3 {
		t.Errorf("report proto %q, streams %d; want h2, 3", rep.Proto, rep.StreamsPerConn)
	}
	conns, protos := s.get()
	if conns != 2 || protos["HTTP/2.0"] != 6 || len(protos) != 1 {
		t.Errorf("server saw %d connections and requests %v; want 2, and 6 over HTTP/2.0", conns, protos)
	}
}

func TestProtoH2CountsServersWithoutIt(t *testing.T) {
	cert, cacert := selfSigned(t)
	srv, s := tlsServer(t, cert, false)
	rep := runLoad(t, protoH2, srv.URL+"/events", cacert, 4, 2)
	if n := rep.Conns; n.Opened != 2 || n.WrongProto != 2 || n.ALPN["http/1.1"] != 2 {
		t.Errorf("connections: %+v, want 2 opened, both counted as not h2", n)
	}
	if c := rep.Clients; c.Connected != 0 || c.Failed != 4 {
		t.Errorf("clients: %+v, want all 4 failed", c)
	}
	if _, protos := s.get(); len(protos) != 0 {
		t.Errorf("server got requests %v; want none", protos)
	}
}

func TestProtoH1TLSOffersOnlyHTTP1(t *testing.T) {
	cert, cacert := selfSigned(t)
	srv, s := tlsServer(t, cert, true)
	rep := runLoad(t, protoH1TLS, srv.URL+"/events", cacert, 3, 1)
	checkDelivered(t, rep)
	if n := rep.Conns; n.Opened != 3 || n.WrongProto != 0 || n.ALPN["http/1.1"] != 3 {
		t.Errorf("connections: %+v, want 3 opened, all http/1.1", n)
	}
	conns, protos := s.get()
	if conns != 3 || protos["HTTP/1.1"] != 3 || len(protos) != 1 {
		t.Errorf("server saw %d connections and requests %v; want 3, all HTTP/1.1", conns, protos)
	}
}

func TestProtoH3(t *testing.T) {
	cert, cacert := selfSigned(t)
	url, s := h3Server(t, cert)
	rep := runLoad(t, protoH3, url, cacert, 4, 2)
	checkDelivered(t, rep)
	if n := rep.Conns; n.Opened != 2 || n.WrongProto != 0 || n.ALPN["h3"] != 2 {
		t.Errorf("connections: %+v, want 2 opened, both h3", n)
	}
	conns, protos := s.get()
	if conns != 2 || protos["HTTP/3.0"] != 4 || len(protos) != 1 {
		t.Errorf("server saw %d connections and requests %v; want 2, and 4 over HTTP/3.0", conns, protos)
	}
}

func TestProtoTLSRejectsUnknownCert(t *testing.T) {
	cert, _ := selfSigned(t)
	srv, _ := tlsServer(t, cert, true)
	_, other := selfSigned(t)
	rep := runLoad(t, protoH2, srv.URL+"/events", other, 2, 2)
	if rep.Conns.Failed != 1 || rep.Clients.Failed != 2 {
		t.Errorf("connections %+v, clients %+v; want the connection and both streams failed", rep.Conns, rep.Clients)
	}
}

func TestConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		cfg  config
		want string // in the error; empty: valid
	}{
		{config{url: "http://127.0.0.1:1/", proto: protoH1, streamsPerConn: 1}, ""},
		{config{url: "https://127.0.0.1:1/", proto: protoH2, streamsPerConn: 10, insecure: true}, ""},
		{config{url: "https://127.0.0.1:1/", proto: protoH1, streamsPerConn: 1}, "http://"},
		{config{url: "http://127.0.0.1:1/", proto: protoH2, streamsPerConn: 1}, "https://"},
		{config{url: "https://127.0.0.1:1/", proto: "h2c", streamsPerConn: 1}, "-proto"},
		{config{url: "https://127.0.0.1:1/", proto: protoH1TLS, streamsPerConn: 2}, "HTTP/1.1 carries one"},
		{config{url: "https://127.0.0.1:1/", proto: protoH3, streamsPerConn: 0}, "-streams-per-conn"},
		{config{url: "http://127.0.0.1:1/", proto: protoH1, streamsPerConn: 1, insecure: true}, "for TLS"},
		{config{url: "https://127.0.0.1:1/", proto: protoH2, streamsPerConn: 1, cacert: "/nonexistent"}, "nonexistent"},
	} {
		tc.cfg.clients, tc.cfg.ramp, tc.cfg.duration = 1, 1, time.Second
		err := tc.cfg.check()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want one about %q", tc.cfg, err, tc.want)
		}
	}
}

func TestTableShowsProto(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r report) string {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	var files []string
	for _, sys := range []string{"sse_fanout", "nchan"} {
		r := report{Labels: labels{Workload: "W1", System: sys, Round: 1}, Proto: protoH2, StreamsPerConn: 10}
		r.Clients.Wanted, r.Clients.Held, r.Events.Delivered = 10, 10, 100
		if sys == "nchan" {
			r.Conns.WrongProto = 1
		}
		files = append(files, write(sys+".json", r))
	}
	old := report{Labels: labels{Workload: "W1", System: "sse_fanout", Round: 1}} // before -proto: h1
	old.Clients.Wanted, old.Clients.Held, old.Events.Delivered = 10, 10, 100
	files = append(files, write("old.json", old))

	var b strings.Builder
	if err := printTable(&b, files, "sse_fanout nchan"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| W1 | sse_fanout | h1 | 10 |",
		"| W1 | sse_fanout | h2 ×10 | 10 |",
		"| W1 | nchan | h2 ×10 (1 conns not h2) | 10 |",
		"| W1 | **sse_fanout ÷ nchan** | h2 ×10 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "| h1 |") > strings.Index(out, "| h2 ×10 |") {
		t.Errorf("h1 rows should come before h2's:\n%s", out)
	}
}
