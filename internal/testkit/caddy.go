package testkit

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile" // the Caddyfile adapter
	_ "github.com/caddyserver/caddy/v2/modules/standard"      // Caddy's own modules
)

// This file runs Caddy in the test process.

// DetachInTests, when false, makes AdaptCaddyfile turn detaching off in
// every sse_fanout handler that does not set it, so that a test runs with
// every client served in its request goroutine. SSEFANOUT_TEST_DETACH=off
// sets it for a whole run; a test may set it for a few tests.
var DetachInTests = os.Getenv("SSEFANOUT_TEST_DETACH") != "off"

// StartCaddy runs Caddy in this process with the given site body on a free
// 127.0.0.1 port, and returns the site's base URL. The test's cleanup
// stops it.
func StartCaddy(t testing.TB, siteBody string) string {
	t.Helper()
	port := FreePort(t)
	StartCaddyfile(t, fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", port, siteBody))
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// StartCaddyfile runs Caddy in this process with the given sites, under
// the tests' global options. The test's cleanup stops it.
func StartCaddyfile(t testing.TB, sites string) {
	t.Helper()
	StartCaddyfileWith(t, GlobalOptions(), sites)
}

// StartCaddyfileWith is StartCaddyfile under the given global options,
// such as GlobalOptionsLoggingTo's.
func StartCaddyfileWith(t testing.TB, global, sites string) {
	t.Helper()
	LoadCaddyfile(t, global+sites)
	t.Cleanup(func() { StopCaddy(t) })
}

// StopCaddy stops the Caddy of this process and waits for its requests
// in sse_fanout to end (WaitHandlersDone): what every test's cleanup does.
func StopCaddy(t testing.TB) {
	t.Helper()
	if err := caddy.Stop(); err != nil {
		t.Errorf("stopping caddy: %v", err)
	}
	WaitHandlersDone(t)
}

// WaitHandlersDone waits until no request is left in sse_fanout: clients
// that a closing stream or an unloaded config spreads out may linger for a
// moment after Caddy stops, and the next test must not see them.
func WaitHandlersDone(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if !bytes.Contains(buf[:n], []byte("caddy-sse-fanout.(*Handler).ServeHTTP")) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("requests still in sse_fanout after Caddy stopped:\n%s", buf[:n])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// GlobalOptions keeps the tests' Caddy off the admin port, out of the
// user's data directory and quiet.
func GlobalOptions() string {
	return globalOptions(LogOptions())
}

// GlobalOptionsLoggingTo are GlobalOptions under which Caddy writes every
// log line of its default log, at every level from debug up, as JSON to
// the file at path: what a test reads to check what is logged. A site's
// own access log (its log directive) still goes where the site says.
func GlobalOptionsLoggingTo(path string) string {
	return globalOptions(logTo(path))
}

// logTo is the global log block of GlobalOptionsLoggingTo.
func logTo(path string) string {
	return fmt.Sprintf("log {\n\t\toutput file %s {\n\t\t\troll_disabled\n\t\t}\n\t\tformat json\n\t\tlevel DEBUG\n\t}", path)
}

// globalOptions are the tests' global options with the given log block.
func globalOptions(logBlock string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	storage file_system %s
	%s
}
`, storage, logBlock)
}

// LoadCaddyfile adapts and loads a whole Caddyfile, replacing the running
// config.
func LoadCaddyfile(t testing.TB, caddyfile string) {
	t.Helper()
	if err := LoadJSON(AdaptCaddyfile(t, caddyfile)); err != nil {
		t.Fatalf("loading config: %v", err)
	}
}

// AdaptCaddyfile adapts a whole Caddyfile to JSON, with detaching turned
// off where the run asks for that (DetachInTests).
func AdaptCaddyfile(t testing.TB, caddyfile string) []byte {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "not formatted") {
			t.Logf("adapt warning: %s", w.String())
		}
	}
	if !DetachInTests {
		cfg = withDetachOff(t, cfg)
	}
	return withTestCert(t, cfg)
}

// LoadJSON loads a JSON config, replacing the running one if it loads.
func LoadJSON(cfg []byte) error { return caddy.Load(cfg, true) }

// withDetachOff sets "detach": false in every sse_fanout handler of a JSON
// config that has no detach of its own.
func withDetachOff(t testing.TB, cfg []byte) []byte {
	t.Helper()
	var tree any
	if err := json.Unmarshal(cfg, &tree); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if _, set := v["detach"]; v["handler"] == "sse_fanout" && !set {
				v["detach"] = false
			}
			for _, child := range v {
				walk(child)
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		}
	}
	walk(tree)
	out, err := json.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TLSGlobalOptions are GlobalOptions for a site served over HTTPS:
// without the port-80 redirect server, and, once AdaptCaddyfile has put
// the tests' certificate in (tlscert.go), with no certificate that Caddy
// manages. protocols is the servers' protocol list, such
// as "h1 h2".
func TLSGlobalOptions(protocols string) string {
	return tlsGlobalOptions(protocols, LogOptions())
}

// TLSGlobalOptionsLoggingTo are TLSGlobalOptions under which Caddy logs as
// under GlobalOptionsLoggingTo.
func TLSGlobalOptionsLoggingTo(protocols, path string) string {
	return tlsGlobalOptions(protocols, logTo(path))
}

// tlsGlobalOptions are the TLS tests' global options with the given log
// block.
func tlsGlobalOptions(protocols, logBlock string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
	skip_install_trust
	local_certs
	auto_https disable_redirects
	servers {
		protocols %s
	}
	%s
}
`, storage, protocols, logBlock)
}

// StartWholeCaddyfile runs Caddy in this process with a whole Caddyfile,
// global options included. The test's cleanup stops it.
func StartWholeCaddyfile(t testing.TB, caddyfile string) {
	t.Helper()
	LoadCaddyfile(t, caddyfile)
	t.Cleanup(func() { StopCaddy(t) })
}

// WaitCertificate waits until Caddy completes TLS handshakes on addr, with
// the tests' certificate (tlscert.go) it loads as it starts.
func WaitCertificate(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for {
		dialer := &net.Dialer{Timeout: time.Second}
		conn, err := tls.DialWithDialer(dialer, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Caddy on %s did not complete a TLS handshake: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
