package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// TestHTTP3ClientReceivesAProxiedStreamIncrementally has a client over
// QUIC (quic-go's HTTP/3 client) read a stream that Caddy serves over
// HTTP/3, with the tests' certificate (testkit.CertFile), on 127.0.0.1. The origin sends each event
// only once the client has read the one before: a proxy that held events
// back, or an HTTP/3 response that was not flushed per event, would stall.
func TestHTTP3ClientReceivesAProxiedStreamIncrementally(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	port := testkit.FreePort(t)
	testkit.StartWholeCaddyfile(t, testkit.TLSGlobalOptions("h1 h2 h3")+fmt.Sprintf(`https://127.0.0.1:%d {
	bind 127.0.0.1
	tls internal
	route {
		sse_probe %s
		sse_fanout %s
	}
}
`, port, t.Name(), origin.URL()))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	testkit.WaitCertificate(t, addr)

	client := &http.Client{Transport: newHTTP3Transport(t)}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/h3", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET over HTTP/3: %v", err)
	}
	events := make(chan sse.Event)
	ended := make(chan error, 1)
	go func() {
		p := sse.NewParser(resp.Body, 1<<20)
		for {
			ev, err := p.Next()
			if err != nil {
				ended <- err
				return
			}
			if ev.HasData {
				select {
				case events <- ev:
				case <-ctx.Done():
					ended <- ctx.Err()
					return
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		select {
		case <-ended:
		case <-time.After(testkit.WaitTimeout):
			t.Error("the HTTP/3 reader did not end")
		}
	})

	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/3.0" {
		t.Fatalf("got %s over %s, want 200 over HTTP/3.0", resp.Status, resp.Proto)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	up := origin.NextConn(t)
	for i := 1; i <= 10; i++ {
		testkit.SendIDs(up, i, i)
		select {
		case ev := <-events:
			if ev.ID != strconv.Itoa(i) || ev.Data != fmt.Sprintf("event %d", i) {
				t.Fatalf("got %+v, want event %d", ev, i)
			}
		case err := <-ended:
			t.Fatalf("the stream ended before event %d: %v", i, err)
		case <-time.After(testkit.WaitTimeout):
			t.Fatalf("event %d did not arrive while the stream stayed open", i)
		}
	}
	reqs := probe.requests()
	if len(reqs) != 1 || reqs[0].Proto != "HTTP/3.0" {
		t.Errorf("Caddy saw %+v, want one HTTP/3.0 request", reqs)
	}
}

// newHTTP3Transport returns a quic-go HTTP/3 client transport that trusts
// the tests' certificate (testkit.CertFile) and sends from a UDP
// socket on 127.0.0.1. The test's cleanup closes it.
func newHTTP3Transport(t *testing.T) *http3.Transport {
	t.Helper()
	rootPEM, err := os.ReadFile(testkit.CertFile())
	if err != nil {
		t.Fatalf("reading the tests' certificate: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("the tests' certificate does not parse")
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	qt := &quic.Transport{Conn: udp}
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Dial: func(ctx context.Context, addr string, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
			raddr, err := net.ResolveUDPAddr("udp", addr)
			if err != nil {
				return nil, err
			}
			return qt.DialEarly(ctx, raddr, tlsConf, conf)
		},
	}
	t.Cleanup(func() {
		tr.Close()
		qt.Close()
		udp.Close()
	})
	return tr
}
