package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
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

	resp, events, ended := readHTTP3(t, "https://"+addr+"/h3")
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

// TestHTTP3MuxPageReadsEveryMember has a client over QUIC read a
// multiplexed page of ten members (muxMembers) that Caddy serves over
// HTTP/3: every member's events come, in order, under the member's name,
// each with the composite cursor naming its own id as the member's, on
// one HTTP/3 request, and the origin sees one connection per member.
func TestHTTP3MuxPageReadsEveryMember(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	m := newMuxMembers(origin)
	base, _ := reloadableProxyOver(t, "h3", origin.URL(), muxSubdirectives...)
	resp, events, ended := readHTTP3(t, base+m.path())
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/3.0" {
		t.Fatalf("got %s over %s, want 200 over HTTP/3.0", resp.Status, resp.Proto)
	}
	m.takeConns(t, "")
	m.send(1, 3)
	got := make(map[string][]string)
	for range 3 * len(m.names) {
		select {
		case ev := <-events:
			i := slices.Index(m.names, ev.Type)
			ids := strings.Split(ev.ID, ",")
			if i < 0 || len(ids) != len(m.names) || ids[i] != strconv.Itoa(len(got[ev.Type])+1) {
				t.Fatalf("got %+v, want a member's next message, with a composite cursor that names its id", ev)
			}
			got[ev.Type] = append(got[ev.Type], ev.Data)
		case err := <-ended:
			t.Fatalf("the stream ended after %v: %v", got, err)
		case <-time.After(testkit.WaitTimeout):
			t.Fatalf("the members' events stopped coming; so far %v", got)
		}
	}
	m.checkMembers(t, got, 3)
	if reqs := probe.requests(); len(reqs) != 1 || reqs[0].Proto != "HTTP/3.0" {
		t.Errorf("Caddy saw %+v, want one HTTP/3.0 request", reqs)
	}
	if n := origin.Total.Load(); n != int64(len(m.names)) {
		t.Errorf("the origin saw %d requests, want %d: one per member", n, len(m.names))
	}
}

// readHTTP3 GETs url over HTTP/3 (newHTTP3Transport) and reads the
// answer with the plugin's parser in a goroutine of its own, which sends
// each event that fires on events, and why the read ended on ended. The
// test's cleanup stops the read and waits for it.
func readHTTP3(t *testing.T, url string) (resp *http.Response, events <-chan sse.Event, ended <-chan error) {
	t.Helper()
	client := &http.Client{Transport: newHTTP3Transport(t)}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	resp, err = client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET over HTTP/3: %v", err)
	}
	ev, end := make(chan sse.Event), make(chan error, 1)
	go func() {
		p := sse.NewParser(resp.Body, 1<<20)
		for {
			e, err := p.Next()
			if err != nil {
				end <- err
				return
			}
			if e.HasData {
				select {
				case ev <- e:
				case <-ctx.Done():
					end <- ctx.Err()
					return
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		select {
		case <-end:
		case <-time.After(testkit.WaitTimeout):
			t.Error("the HTTP/3 reader did not end")
		}
	})
	return resp, ev, end
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
