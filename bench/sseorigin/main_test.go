package main

// Tests that -tls-cert serves HTTP/2 (and HTTP/1.1 to a client that asks
// for it) and -h3 HTTP/3, on 127.0.0.1.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sseorigin"
)

// certFiles writes a self-signed certificate for 127.0.0.1 and its key as
// PEM files, and returns them with a pool that trusts the certificate.
func certFiles(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
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
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for file, block := range map[string]*pem.Block{
		certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestServeTLSAndH3(t *testing.T) {
	certFile, keyFile, pool := certFiles(t)
	l, err := listen("127.0.0.1:0", certFile, keyFile, true)
	if err != nil {
		t.Fatal(err)
	}
	addr := l.tcp.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() {
		c := clock{rate: 100, interval: 10 * time.Millisecond, size: 128}
		served <- c.serve(ctx, l, sseorigin.Options{Queue: 16})
	}()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	// ALPN: h2 when offered, http/1.1 for a client that offers only that.
	for _, tc := range []struct {
		offer []string
		want  string
	}{
		{[]string{"h2", "http/1.1"}, "h2"},
		{[]string{"http/1.1"}, "http/1.1"},
	} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: tc.offer})
		if err != nil {
			t.Fatal(err)
		}
		if got := conn.ConnectionState().NegotiatedProtocol; got != tc.want {
			t.Errorf("offering %v, negotiated %q; want %q", tc.offer, got, tc.want)
		}
		conn.Close()
	}

	// An event stream over HTTP/2 and over HTTP/3.
	h2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	defer h2.CloseIdleConnections()
	h3 := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer h3.Close()
	for _, tc := range []struct {
		rt    http.RoundTripper
		major int
	}{{h2, 2}, {h3, 3}} {
		reqCtx, done := context.WithTimeout(ctx, 5*time.Second)
		req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, "https://"+addr+"/events", nil)
		resp, err := tc.rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("HTTP/%d: %v", tc.major, err)
		}
		buf := make([]byte, 256)
		n, err := resp.Body.Read(buf)
		if resp.ProtoMajor != tc.major || resp.StatusCode != http.StatusOK || n == 0 {
			t.Errorf("HTTP/%d: %s %s, read %q, %v", tc.major, resp.Proto, resp.Status, buf[:n], err)
		}
		resp.Body.Close()
		done()
	}
}

func TestClockJSONPayload(t *testing.T) {
	for _, json := range []bool{false, true} {
		c := clock{rate: 1000, interval: time.Millisecond, size: 1024, json: json}
		ctx, cancel := context.WithCancel(t.Context())
		var got []*sseorigin.Stamped
		c.run(ctx, func(ev *sseorigin.Stamped) {
			got = append(got, ev)
			if len(got) == 3 {
				cancel()
			}
		})
		for _, ev := range got {
			wire := ev.AppendWire(nil, "/events")
			isJSON := bytes.Contains(ev.Data(), []byte(` {"event":"order.`))
			if isJSON != json || len(wire) > 1024 || len(wire) < 1000 {
				t.Errorf("json %v: event %d is %d bytes: %.80q…", json, ev.Seq(), len(wire), wire)
			}
		}
	}
}
