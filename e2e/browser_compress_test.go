package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// The browser reading compressed event streams (sse_fanout's compress).

// bigEventData is the data of a 100 KB event: JSON-ish rows.
func bigEventData() string {
	var b strings.Builder
	for i := 0; b.Len() < 100_000; i++ {
		fmt.Fprintf(&b, `{"row":%d,"name":"row %d of a hundred kilobytes","even":%t},`, i, i*31, i%2 == 0)
	}
	return b.String()
}

// TestBrowserReadsCompressedStreams has Chromium's EventSource read
// compress gzip and compress zstd streams, over HTTP/1.1 (detached) and
// HTTP/2 (in the request): browserScript, then a 100 KB event after a few
// keepalives, must fire exactly what the origin read directly fires; then a
// config reload cuts the browser, and it resumes from the buffer, replayed
// compressed, with no gap and no duplicate. Every answer Caddy gave the
// browser was in the encoding.
func TestBrowserReadsCompressedStreams(t *testing.T) {
	big := bigEventData()
	tail := "id: 7\ndata: " + big + "\n\nevent: end\ndata: big sent\n\n"
	for _, tc := range []struct{ enc, proto string }{
		{"gzip", "h1"},
		{"zstd", "h1"},
		{"zstd", "h2"},
	} {
		t.Run(tc.enc+" "+tc.proto, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			direct := directOrigin(t, origin)
			probe := newProbe(t, t.Name())
			port := testkit.FreePort(t)
			scheme, global, extra := "http", testkit.GlobalOptions(), []chromedp.ExecAllocatorOption(nil)
			if tc.proto == "h2" {
				scheme, global = "https", testkit.TLSGlobalOptions("h1 h2")
				extra = append(extra, chromedp.Flag("ignore-certificate-errors", true))
			}
			caddyfile := func(heartbeat string) string {
				tls := ""
				if scheme == "https" {
					tls = "\ttls internal\n"
				}
				return global + fmt.Sprintf("%s://127.0.0.1:%d {\n\tbind 127.0.0.1\n%s\t%s\n}\n", scheme, port, tls,
					proxySite(t, t.Name(), origin.URL(), "compress "+tc.enc+"\n\t\t\theartbeat "+heartbeat))
			}
			testkit.StartWholeCaddyfile(t, caddyfile("100ms"))
			base := fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
			if scheme == "https" {
				testkit.WaitCertificate(t, fmt.Sprintf("127.0.0.1:%d", port))
			}
			tab := newBrowser(t, extra...)

			var up *testkit.OriginConn
			record := func(base string) []string {
				navigate(t, tab, recorderURL(base, browserScriptNames, "/s/all"))
				up = origin.NextConn(t)
				if base != direct && tc.proto == "h1" && testkit.DetachInTests {
					// Compressed, it is detached all the same.
					testkit.Eventually(t, "the browser's client to be detached", func() bool { return detachedClients(t) == 1 })
				}
				up.Send(browserScript)
				waitPage(t, tab, "the end event", hasData("end"))
				if base != direct {
					// Keepalives go by, compressed, between events.
					witness := testkit.OpenClient(t, base+"/s/all", nil)
					for range 3 {
						witness.WaitKeepalive(t)
					}
					witness.Close()
				}
				up.Send(tail)
				waitPage(t, tab, "the event after the big one", hasData("big sent"))
				return recordStrings(pageRecord(t, tab))
			}
			fromOrigin := record(direct)
			fromProxy := record(base)
			if !slices.Equal(fromProxy, fromOrigin) {
				t.Fatalf("through the proxy, the page saw:\n%s\nfrom the origin directly:\n%s",
					abbreviated(fromProxy), abbreviated(fromOrigin))
			}
			if !slices.Contains(fromProxy, fmt.Sprintf(`src 0 message "message" data=%q lastEventId="7" readyState=1`, big)) {
				t.Fatal("the page did not see the 100 KB event")
			}

			// A reload cuts the browser; it resumes from the buffer.
			testkit.LoadCaddyfile(t, caddyfile("1m"))
			seen := len(fromProxy)
			waitPage(t, tab, "the cut", fmt.Sprintf(`window.rec.slice(%d).some((e) => e.kind === "error")`, seen))
			testkit.SendIDs(up, 8, 15) // while the browser is away: into the buffer
			reqs := fromChrome(probe.waitFor(t, "the browser's reconnect", func(reqs []probeRequest) bool {
				return countAnswered(fromChrome(reqs), http.StatusOK) == 2
			}))
			if got := reqs[1].Header.Get("Last-Event-ID"); got != "7" {
				t.Errorf("the browser reconnected with Last-Event-ID %q, want 7", got)
			}
			testkit.SendIDs(up, 16, 20)
			waitPage(t, tab, "event 20", hasData("event 20"))
			rec := pageRecord(t, tab)[seen:]
			if got := pageIDs(t, rec); !slices.Equal(got, seq(8, 20)) {
				t.Errorf("after the reconnect the page saw ids %v, want 8..20 once each\nrecord:\n%s", got, fmtRecord(rec))
			}
			if opens, errs := countKind(rec, "open"), countKind(rec, "error"); opens != 1 || errs != 1 {
				t.Errorf("after the first stream the page saw %d open and %d error events, want 1 and 1\nrecord:\n%s", opens, errs, fmtRecord(rec))
			}

			for _, r := range fromChrome(probe.requests()) {
				if r.Status != http.StatusOK || r.Encoding != tc.enc {
					t.Errorf("Caddy answered the browser's request (Accept-Encoding %q) %d in %q, want 200 in %s",
						r.Header.Get("Accept-Encoding"), r.Status, r.Encoding, tc.enc)
				}
				if want := map[string]string{"h1": "HTTP/1.1", "h2": "HTTP/2.0"}[tc.proto]; r.Proto != want {
					t.Errorf("the browser came over %s, want %s", r.Proto, want)
				}
			}
		})
	}
}

// fromChrome returns the requests the browser made.
func fromChrome(reqs []probeRequest) []probeRequest {
	var out []probeRequest
	for _, r := range reqs {
		if strings.Contains(r.Header.Get("User-Agent"), "Chrome") {
			out = append(out, r)
		}
	}
	return out
}

// abbreviated shows a page record with long data cut short.
func abbreviated(rec []string) string {
	out := make([]string, len(rec))
	for i, s := range rec {
		if len(s) > 200 {
			s = s[:100] + fmt.Sprintf("…(%d bytes)…", len(s)-200) + s[len(s)-100:]
		}
		out[i] = s
	}
	return strings.Join(out, "\n")
}
