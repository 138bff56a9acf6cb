package ssefanout

// The cors subdirective: which pages of other origins may read a stream.

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// corsHead opens path on base over a bare connection with the given
// Origin (none if empty) and returns the response's status and header.
// The client is plain HTTP/1, so it is detached once its head is out.
func corsHead(t *testing.T, base, path, origin string, headers ...string) (string, http.Header) {
	t.Helper()
	if origin != "" {
		headers = append(headers, "Origin: "+origin)
	}
	rc := dialRaw(t, base, path, headers...)
	return rc.status, rc.header
}

func TestCORSAnswersListedOriginsWithCredentials(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tcors https://app.example http://127.0.0.1:8081\n}")
	for _, tc := range []struct {
		origin, allow, credentials string
	}{
		{"https://app.example", "https://app.example", "true"},
		{"http://127.0.0.1:8081", "http://127.0.0.1:8081", "true"},
		{"https://evil.example", "", ""},
		{"https://app.example.evil", "", ""},
		{"http://app.example", "", ""}, // another scheme is another origin
		{"null", "", ""},
		{"", "", ""}, // same-origin or not a browser
	} {
		status, h := corsHead(t, base, "/c", tc.origin)
		if status != "HTTP/1.1 200 OK" {
			t.Fatalf("Origin %q: status %q", tc.origin, status)
		}
		if got := h.Get("Access-Control-Allow-Origin"); got != tc.allow {
			t.Errorf("Origin %q: Access-Control-Allow-Origin %q, want %q", tc.origin, got, tc.allow)
		}
		if got := h.Get("Access-Control-Allow-Credentials"); got != tc.credentials {
			t.Errorf("Origin %q: Access-Control-Allow-Credentials %q, want %q", tc.origin, got, tc.credentials)
		}
		if !slices.Contains(h.Values("Vary"), "Origin") {
			t.Errorf("Origin %q: Vary %q, want Origin: the answer depends on it", tc.origin, h.Values("Vary"))
		}
	}
	origin.NextConn(t)
	origin.NoNewConn(t) // one stream for every origin
	testkit.Eventually(t, "the clients to be detached", func() bool { return detachedClients() > 0 })
}

func TestCORSAnyOriginNeverWithCredentials(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tcors * https://app.example\n}")
	_, h := corsHead(t, base, "/a", "https://other.example")
	if h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("an unlisted origin under *: %q", h)
	}
	_, h = corsHead(t, base, "/a", "https://app.example")
	if h.Get("Access-Control-Allow-Origin") != "https://app.example" || h.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("a listed origin beside *: %q", h)
	}
}

// TestCORSOnRefusals: a page of an allowed origin also sees why it was
// refused, rather than a network error.
func TestCORSOnRefusals(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tcors https://app.example\n\tmax_clients 1\n}")
	status, h := corsHead(t, base, "/r?last_event_id=a%0Ab", "https://app.example")
	if !strings.Contains(status, "400") || h.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("bad cursor: %s %q", status, h)
	}
	corsHead(t, base, "/r", "https://app.example")
	status, h = corsHead(t, base, "/r", "https://app.example")
	if !strings.Contains(status, "503") || h.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("full stream: %s %q", status, h)
	}
}

func TestWithoutCORSNoCORSHeaders(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	_, h := corsHead(t, base, "/n", "https://app.example")
	for _, name := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Vary"} {
		if v := h.Get(name); v != "" {
			t.Errorf("%s: %q without cors", name, v)
		}
	}
}

// TestCORSByTheHeaderDirective is the README's recipe without the cors
// subdirective: Caddy's header directive sets the headers before
// sse_fanout answers, so a detached client gets them too.
func TestCORSByTheHeaderDirective(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, `@app header Origin https://app.example
	header @app {
		Access-Control-Allow-Origin "{http.request.header.Origin}"
		Access-Control-Allow-Credentials true
	}
	header Vary Origin
	sse_fanout `+origin.URL())
	_, h := corsHead(t, base, "/h", "https://app.example")
	if h.Get("Access-Control-Allow-Origin") != "https://app.example" || h.Get("Access-Control-Allow-Credentials") != "true" || h.Get("Vary") != "Origin" {
		t.Fatalf("allowed origin: %q", h)
	}
	_, h = corsHead(t, base, "/h", "https://evil.example")
	if h.Get("Access-Control-Allow-Origin") != "" || h.Get("Vary") != "Origin" {
		t.Fatalf("other origin: %q", h)
	}
	testkit.Eventually(t, "the clients to be detached", func() bool { return detachedClients() == 2 })
}

func TestCORSOriginsAreChecked(t *testing.T) {
	for _, tc := range []struct{ input, want string }{
		{"sse_fanout http://o {\n\tcors\n}", "wrong argument count"},
		{"sse_fanout http://o {\n\tcors ftp://a.example\n}", "bad cors origin 'ftp://a.example'"},
		{"sse_fanout http://o {\n\tcors https://a.example/path\n}", "bad cors origin 'https://a.example/path'"},
		{"sse_fanout http://o {\n\tcors a.example\n}", "bad cors origin 'a.example'"},
		{"sse_fanout http://o {\n\tcors null\n}", "bad cors origin 'null'"},
		{"sse_fanout http://o {\n\tcors https://a.example?x\n}", "at Testfile:2"},
		{"sse_fanout http://o {\n\tcors https://u@a.example\n}", "bad cors origin"},
		{"sse_fanout http://o {\n\tcors https://*.a.example\n}", "bad cors origin"},
	} {
		err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.input, err, tc.want)
		}
	}
	// Origins are compared as browsers send them: lower case, no default
	// port, no trailing slash.
	p, err := parseCORS([]string{"HTTPS://App.Example:443/", "http://b.example:8080", "http://c.example:80"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []string{"https://app.example", "http://b.example:8080", "http://c.example"} {
		if _, ok := p.origins[o]; !ok {
			t.Errorf("%s is not allowed; allowed: %v", o, p.origins)
		}
	}
}
