package ssefanout

// The admin API, and what it and the logs never show.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestSecretsStayOutOfLogsMetricsAndAdmin(t *testing.T) {
	const token, password = "Bearer SECRET-TOKEN-4711", "pw-0815-secret"
	origin := testkit.NewOrigin(t)
	origin.Status.Store(http.StatusBadGateway) // so the stream logs warnings
	withUser := strings.Replace(origin.URL(), "http://", "http://alice:"+password+"@", 1)

	logFile := filepath.Join(t.TempDir(), "caddy.log")
	adminPort, port := testkit.FreePort(t), testkit.FreePort(t)
	global := strings.Replace(testkit.GlobalOptionsLoggingTo(logFile), "admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	testkit.LoadCaddyfile(t, global+fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	sse_fanout %s {
		key {http.request.header.Authorization}
		header_up Authorization {http.request.header.Authorization}
	}
}
`, port, withUser))
	t.Cleanup(func() {
		testkit.LoadCaddyfile(t, testkit.GlobalOptions())
		testkit.WaitHandlersDone(t)
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	// The stream never opens: its client is refused with the origin's answer.
	if c, _ := testkit.DialClient(t, base+"/me", http.Header{"Authorization": {token}}); c != nil {
		c.Close()
	}
	testkit.Eventually(t, "upstream failures", func() bool { return origin.Total.Load() >= 2 })

	resp, err := testkit.HTTPClient.Get(fmt.Sprintf("http://127.0.0.1:%d/sse_fanout/streams", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(admin), `"/me`) {
		t.Fatalf("admin API does not list the stream: %s", admin)
	}

	var metrics strings.Builder
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := registerMetrics(reg); err != nil {
		t.Fatal(err)
	}
	more, _ := reg.Gather()
	for _, mf := range append(families, more...) {
		metrics.WriteString(mf.String())
	}

	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), "upstream failed") {
		t.Fatalf("the log has no upstream warning to check:\n%s", logs)
	}
	for what, text := range map[string]string{"admin API": string(admin), "metrics": metrics.String(), "log": string(logs)} {
		for _, secret := range []string{"SECRET-TOKEN-4711", password, "alice"} {
			if strings.Contains(text, secret) {
				t.Errorf("the %s holds %q:\n%s", what, secret, text)
			}
		}
	}
}

func TestStatusCountsCompressedClients(t *testing.T) {
	s := newTestStream(testSettings())
	addClientIn(s, nil, "")
	addClientIn(s, encZstd, "")
	gz := addClientIn(s, encGzip, "")
	addClientIn(s, encGzip, "")
	publishTo(s, jsonEvent(1))
	s.leave(gz)
	st := s.status()
	if st.Clients != 3 || len(st.CompressedClients) != 2 || st.CompressedClients["gzip"] != 1 || st.CompressedClients["zstd"] != 1 {
		t.Fatalf("clients %d, compressed %v; want 3, of them gzip 1 and zstd 1", st.Clients, st.CompressedClients)
	}
	if f := s.ring.get(1); st.BufferedBytes != int(f.size.Load()) || f.size.Load() <= int64(len(f.bytes)) {
		t.Fatalf("buffered_bytes %d, want the frame and its compressed forms, %d (the frame alone: %d)", st.BufferedBytes, f.size.Load(), len(f.bytes))
	}
}

// TestStatusUpstreamErrorIsClearedOnConnect holds that upstream_error
// tells why the stream is in backoff, with its time, and is gone once the
// upstream connects again: an operator never reads an old failure as the
// state of a healthy stream.
func TestStatusUpstreamErrorIsClearedOnConnect(t *testing.T) {
	s := newTestStream(testSettings())
	before := time.Now()
	s.up.setState(stateBackoff, errors.New("origin answered 502"))
	st := s.status()
	if st.UpstreamError != "origin answered 502" || st.UpstreamErrorAt == nil || st.UpstreamErrorAt.Before(before) {
		t.Fatalf("in backoff: upstream_error %q at %v, want the failure and its time", st.UpstreamError, st.UpstreamErrorAt)
	}
	s.up.setState(stateConnecting, nil)
	if st := s.status(); st.UpstreamError == "" || st.UpstreamErrorAt == nil {
		t.Fatalf("reconnecting: upstream_error %q at %v, want the failure it retries after", st.UpstreamError, st.UpstreamErrorAt)
	}
	s.up.setState(stateConnected, nil)
	st = s.status()
	if st.UpstreamError != "" || st.UpstreamErrorAt != nil {
		t.Fatalf("connected: upstream_error %q at %v, want none", st.UpstreamError, st.UpstreamErrorAt)
	}
	out, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "upstream_error") {
		t.Fatalf("connected: the admin API shows %s", out)
	}
}
