package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// This file drives a real browser, headless Chromium, through
// github.com/chromedp/chromedp, against an in-process Caddy and the tests'
// scriptable origin, all on 127.0.0.1.

// browserTimeout bounds the browser's start and stop.
const browserTimeout = 60 * time.Second

// chromiumPath returns the Chromium to drive: $SSEFANOUT_CHROMIUM, or the
// first of the usual names on PATH. Without one the test is skipped, except
// under CI=true, where the browser tests must run and a missing browser
// fails them.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SSEFANOUT_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium on PATH: under CI=true the browser tests must run (.ci/run installs Debian's chromium)")
	}
	t.Skip("no Chromium on PATH (install Debian's chromium, or set SSEFANOUT_CHROMIUM); skipping the browser test")
	return ""
}

// newBrowser starts headless Chromium and returns the context of one tab.
// The test's cleanup stops the browser and removes its profile. Extra
// flags are added to the ones every test uses.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := chromiumPath(t)
	profile, err := os.MkdirTemp("", "ssefanout-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile), // a fresh profile per browser
		chromedp.NoSandbox,            // Chromium refuses to run as root with its sandbox
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		// The machine has no outside network: keep Chromium from trying.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("disable-domain-reliability", true),
	)
	opts = append(opts, extra...)

	logs := &testLogf{t: t}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithErrorf(logs.logf))
	stop := func() {
		closeCtx, cancel := context.WithTimeout(ctx, browserTimeout)
		err := chromedp.Cancel(closeCtx)
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			logs.logf("closing the browser: %v", err)
		}
		cancelTab()
		cancelAlloc() // kills the process if it is still there, and waits for it
		logs.stop()
		removeProfile(t, profile)
	}

	// The first Run starts the browser; it must not have a deadline, since
	// its context becomes the browser's, so the start is bounded here.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			stop()
			t.Fatalf("starting %s: %v", path, err)
		}
	case <-time.After(browserTimeout):
		stop()
		<-started
		t.Fatalf("starting %s: no answer in %v", path, browserTimeout)
	}
	t.Cleanup(stop)
	return ctx
}

// removeProfile removes a browser profile. Chromium's helper processes may
// still write to it for a moment after the browser stops, so a failed
// removal is tried again, for a bounded time.
func removeProfile(t *testing.T, dir string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := os.RemoveAll(dir)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("removing the browser profile %s: %v", dir, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testLogf logs chromedp's complaints into the test until the browser is
// stopped; after that the test may be over, and logging would panic.
type testLogf struct {
	t       *testing.T
	mu      sync.Mutex
	stopped bool
}

func (l *testLogf) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Logf("chromedp: "+format, args...)
	}
}

func (l *testLogf) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
}

// browserPageDir holds eventsource.html, the page that opens EventSources
// and records what they fire.
func browserPageDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "browser"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// recorderURL is the address of the recorder page on base, opening one
// EventSource per src and listening for the named event types.
func recorderURL(base string, names []string, srcs ...string) string {
	q := make([]string, 0, len(srcs)+1)
	for _, s := range srcs {
		q = append(q, "src="+url.QueryEscape(s))
	}
	if len(names) > 0 {
		q = append(q, "names="+url.QueryEscape(strings.Join(names, ",")))
	}
	return base + "/eventsource.html?" + strings.Join(q, "&")
}

// proxySite is a Caddyfile site body that serves the recorder page and
// sends /s/* through sse_probe (named probe) to sse_fanout with the given
// subdirectives.
func proxySite(t *testing.T, probe, origin, subdirectives string) string {
	t.Helper()
	return fmt.Sprintf(`route /s/* {
		sse_probe %s
		sse_fanout %s {
			%s
		}
	}
	root * %s
	file_server`, probe, origin, subdirectives, browserPageDir(t))
}

// reloadableProxy starts Caddy with proxySite on a port of its own, with
// the given sse_fanout subdirectives and a heartbeat of 1m, and returns its
// base URL and a reload: the same site with a heartbeat of 2m, a config
// change that ends the old config's clients, as any reload does.
func reloadableProxy(t *testing.T, origin string, subdirectives ...string) (base string, reload func()) {
	t.Helper()
	return reloadableProxyOver(t, "h1", origin, subdirectives...)
}

// reloadableProxyOver is reloadableProxy served over proto: "h1", plain
// HTTP/1.1; "h2", HTTPS with the tests' certificate (testkit.CertFile),
// which a browser reads over HTTP/2 once told to ignore certificate
// errors (browserFlags); or "h3", the same with HTTP/3 too, for a QUIC
// client (newHTTP3Transport).
func reloadableProxyOver(t *testing.T, proto, origin string, subdirectives ...string) (base string, reload func()) {
	t.Helper()
	port := testkit.FreePort(t)
	scheme, global, tls := "http", testkit.GlobalOptions(), ""
	switch proto {
	case "h2":
		scheme, global, tls = "https", testkit.TLSGlobalOptions("h1 h2"), "\n\ttls internal"
	case "h3":
		scheme, global, tls = "https", testkit.TLSGlobalOptions("h1 h2 h3"), "\n\ttls internal"
	}
	site := func(heartbeat string) string {
		subs := strings.Join(append(subdirectives, "heartbeat "+heartbeat), "\n\t\t\t")
		return fmt.Sprintf("%s://127.0.0.1:%d {\n\tbind 127.0.0.1%s\n\t%s\n}\n", scheme, port, tls, proxySite(t, t.Name(), origin, subs))
	}
	testkit.StartCaddyfileWith(t, global, site("1m"))
	if scheme == "https" {
		testkit.WaitCertificate(t, fmt.Sprintf("127.0.0.1:%d", port))
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), func() {
		testkit.LoadCaddyfile(t, global+site("2m"))
	}
}

// browserFlags are the flags a browser needs to read a proxy served over
// proto (reloadableProxyOver): for "h2", to accept the tests' certificate.
func browserFlags(proto string) []chromedp.ExecAllocatorOption {
	if proto == "h2" {
		return []chromedp.ExecAllocatorOption{chromedp.Flag("ignore-certificate-errors", true)}
	}
	return nil
}

// wantProto is the protocol a request reaches Caddy with from a client
// of a proxy served over proto (reloadableProxyOver).
func wantProto(proto string) string {
	switch proto {
	case "h2":
		return "HTTP/2.0"
	case "h3":
		return "HTTP/3.0"
	}
	return "HTTP/1.1"
}

// directOrigin serves the recorder page and, under /s/, the test origin
// itself, on a server of its own: the page then reads the origin without
// the proxy, from the same web origin, as a browser pointed straight at
// the application would. Other paths are 404, so that a stray request (a
// favicon) never becomes an origin connection.
func directOrigin(t *testing.T, o *testkit.Origin) string {
	t.Helper()
	page := filepath.Join(browserPageDir(t), "eventsource.html")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/eventsource.html":
			http.ServeFile(w, r, page)
		case strings.HasPrefix(r.URL.Path, "/s/"):
			o.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// navigate loads url in the tab.
func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	actx, cancel := context.WithTimeout(ctx, testkit.WaitTimeout)
	defer cancel()
	if err := chromedp.Do(actx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("loading %s: %v", url, err)
	}
}

// waitPage polls the page until the JavaScript expression is truthy, for a
// bounded time, and fails the test with the page's record otherwise. It
// polls from here rather than with chromedp.Poll, whose promise can hang
// when it starts while the page is still loading.
func waitPage(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(testkit.WaitTimeout)
	for {
		actx, cancel := context.WithTimeout(ctx, testkit.WaitTimeout)
		ok, err := chromedp.Run(actx, chromedp.Evaluate[bool]("!!("+expr+")"))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s (%s): timed out (last error: %v)\npage record:\n%s",
				what, expr, err, fmtRecord(pageRecord(t, ctx)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// evalPage evaluates a JavaScript expression in the page and decodes its
// value into a T.
func evalPage[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	actx, cancel := context.WithTimeout(ctx, testkit.WaitTimeout)
	defer cancel()
	v, err := chromedp.Run(actx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// pageEntry is one listener call the recorder page saw.
type pageEntry struct {
	Src         int     `json:"src"`
	Kind        string  `json:"kind"` // open, error, message or named
	Type        string  `json:"type"`
	Data        *string `json:"data"`
	LastEventID *string `json:"lastEventId"`
	ReadyState  int     `json:"readyState"`
	T           float64 `json:"t"` // when, in ms since the page loaded; not part of String
}

func (e pageEntry) String() string {
	switch e.Kind {
	case "open", "error":
		return fmt.Sprintf("src %d %s readyState=%d", e.Src, e.Kind, e.ReadyState)
	}
	return fmt.Sprintf("src %d %s %q data=%q lastEventId=%q readyState=%d",
		e.Src, e.Kind, e.Type, deref(e.Data), deref(e.LastEventID), e.ReadyState)
}

func deref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}

// pageRecord returns what the recorder page's listeners saw so far.
func pageRecord(t *testing.T, ctx context.Context) []pageEntry {
	t.Helper()
	actx, cancel := context.WithTimeout(ctx, testkit.WaitTimeout)
	defer cancel()
	raw, err := chromedp.Run(actx, chromedp.Evaluate[string](`JSON.stringify(window.rec || [])`))
	if err != nil {
		t.Logf("reading the page's record: %v", err)
		return nil
	}
	var rec []pageEntry
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		t.Fatalf("decoding the page's record: %v\n%s", err, raw)
	}
	return rec
}

// recordStrings renders a record one entry per string, for comparisons
// with readable differences.
func recordStrings(rec []pageEntry) []string {
	s := make([]string, len(rec))
	for i, e := range rec {
		s[i] = e.String()
	}
	return s
}

func fmtRecord(rec []pageEntry) string {
	var b strings.Builder
	for i, e := range rec {
		fmt.Fprintf(&b, "  %3d %s\n", i, e)
	}
	return b.String()
}

// fired returns the entries of events (message and named), without open
// and error.
func fired(rec []pageEntry) []pageEntry {
	var out []pageEntry
	for _, e := range rec {
		if e.Kind == "message" || e.Kind == "named" {
			out = append(out, e)
		}
	}
	return out
}

// countKind counts the entries of one kind.
func countKind(rec []pageEntry, kind string) int {
	n := 0
	for _, e := range rec {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// hasData is a JavaScript expression that is true once the page's record
// holds an event with the given data.
func hasData(data string) string {
	b, _ := json.Marshal(data)
	return fmt.Sprintf(`window.rec.some((e) => (e.kind === "message" || e.kind === "named") && e.data === %s)`, b)
}
