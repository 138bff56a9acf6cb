package ssefanout

// A shared writer's drain, on a socket whose buffers are made small.

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// A client whose socket is full for a while is drained by a goroutine of
// its own, then rejoins the shared writer, and misses nothing; the others
// are not held up meanwhile. Over TLS too, where the shared writer writes
// a client's records only when its socket has room for them.
func TestDetachedClientThatStallsCatchesUp(t *testing.T) {
	const options = "{\n\t\tdetach on\n\t\tclient_queue 4096\n\t\tbuffer_bytes 256MiB\n\t}"
	t.Run("plain", func(t *testing.T) {
		origin := testkit.NewOrigin(t)
		base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" "+options)
		stallAndCatchUp(t, origin, base, func(conn net.Conn) net.Conn { return conn })
	})
	t.Run("TLS", func(t *testing.T) {
		origin := testkit.NewOrigin(t)
		port := testkit.FreePort(t)
		testkit.StartWholeCaddyfile(t, testkit.TLSGlobalOptions("h1")+fmt.Sprintf(
			"https://127.0.0.1:%d {\n\tbind 127.0.0.1\n\ttls internal\n\tsse_fanout %s %s\n}\n", port, origin.URL(), options))
		base := fmt.Sprintf("https://127.0.0.1:%d", port)
		testkit.WaitCertificate(t, strings.TrimPrefix(base, "https://"))
		stallAndCatchUp(t, origin, base, func(conn net.Conn) net.Conn {
			tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			return tc
		})
	})
}

// stallAndCatchUp runs TestDetachedClientThatStallsCatchesUp against the
// proxy at base, with wrap making the slow client's connection (TLS or
// not) from its TCP connection.
func stallAndCatchUp(t *testing.T, origin *testkit.Origin, base string, wrap func(net.Conn) net.Conn) {
	fast := testkit.OpenClient(t, base+"/stall", nil)
	up := origin.NextConn(t)

	// A small receive buffer, set before the connection opens: shrunk
	// later, it would make the kernel drop segments and back off.
	addr := base[strings.Index(base, "//")+2:]
	dialer := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return err
	}}
	tcp, err := dialer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := wrap(tcp)
	defer conn.Close()
	fmt.Fprintf(conn, "GET /stall HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	testkit.Eventually(t, "both clients to be detached", func() bool { return detachedClients() == 2 })

	// Far more than the socket buffers hold, while the slow one reads
	// nothing; the fast one reads every event as it comes.
	payload := strings.Repeat("x", 32<<10)
	const total = 400
	for i := 1; i <= total; i++ {
		up.Send(fmt.Sprintf("id: %d\ndata: %s\n\n", i, payload))
		if ev := fast.NextData(t); ev.ID != strconv.Itoa(i) {
			t.Fatalf("the fast client got id %s, want %d", ev.ID, i)
		}
	}
	if n := counterValue(t, origin.URL(), "slow_client_drops"); n != 0 {
		t.Fatalf("%v clients cut", n)
	}

	// Now the slow one reads: everything, in order, once.
	r := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(testkit.WaitTimeout))
	if _, err := r.ReadString('\n'); err != nil { // the status line
		t.Fatal(err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	p := sse.NewParser(r, 16<<20)
	for i := 1; i <= total; i++ {
		ev, err := p.Next()
		if err != nil {
			t.Fatalf("after %d events: %v", i-1, err)
		}
		if !ev.HasData {
			i--
			continue
		}
		if ev.ID != strconv.Itoa(i) || len(ev.Data) != len(payload) {
			t.Fatalf("the slow client got id %s (%d bytes), want %d", ev.ID, len(ev.Data), i)
		}
	}
	// And it is back on the shared writer: live events reach it.
	up.Send("id: live\ndata: live\n\n")
	for {
		ev, err := p.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.HasData {
			if ev.Data != "live" {
				t.Fatalf("got %q, want live", ev.Data)
			}
			break
		}
	}
}
