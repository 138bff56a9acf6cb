package ssefanout

// Which stream a request asks for, and what of the client is trusted.

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestPathsAndQueriesAreSeparateStreams(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())

	paths := []string{"/a", "/b", "/a?room=1", "/a?room=2"}
	clients := map[string][]*testkit.Client{}
	ups := map[string]*testkit.OriginConn{}
	for _, p := range paths {
		clients[p] = []*testkit.Client{testkit.OpenClient(t, base+p, nil), testkit.OpenClient(t, base+p, nil)}
		up := origin.NextConn(t)
		ups[up.Path] = up
	}
	for _, p := range paths {
		up := ups[p]
		if up == nil {
			t.Fatalf("no upstream connection for %s; have %v", p, ups)
		}
		up.Send("data: for " + p + "\n\n")
	}
	for _, p := range paths {
		for _, c := range clients[p] {
			if ev := c.NextEvent(t); ev.Data != "for "+p {
				t.Fatalf("client of %s got %q", p, ev.Data)
			}
		}
	}
	origin.NoNewConn(t)
}

func TestUpstreamURLKeepsBasePath(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+"/origin/")
	testkit.OpenClient(t, base+"/feed/x%2Fy?q=a+b&r=1", nil)
	up := origin.NextConn(t)
	if want := "/origin/feed/x%2Fy?q=a+b&r=1"; up.Path != want {
		t.Fatalf("upstream request URI %q, want %q", up.Path, want)
	}
}

func TestKeyIgnoreQuery(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tkey_ignore_query _ t\n}")
	a := testkit.OpenClient(t, base+"/k?room=1&_=123", nil)
	b := testkit.OpenClient(t, base+"/k?t=9&room=1&_=456", nil)
	up := origin.NextConn(t)
	if up.Path != "/k?room=1" {
		t.Fatalf("upstream request %q, want /k?room=1", up.Path)
	}
	up.Send("data: shared\n\n")
	for _, c := range []*testkit.Client{a, b} {
		if ev := c.NextData(t); ev.Data != "shared" {
			t.Fatalf("got %+v", ev)
		}
	}
	origin.NoNewConn(t)
}

func TestPerUserStreams(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tkey {http.request.header.Authorization}\n\theader_up Authorization {http.request.header.Authorization}\n}")
	alice := testkit.OpenClient(t, base+"/me", http.Header{"Authorization": {"Bearer alice"}})
	upAlice := origin.NextConn(t)
	bob := testkit.OpenClient(t, base+"/me", http.Header{"Authorization": {"Bearer bob"}})
	upBob := origin.NextConn(t)
	alice2 := testkit.OpenClient(t, base+"/me", http.Header{"Authorization": {"Bearer alice"}})
	origin.NoNewConn(t)
	if got := upAlice.Header.Get("Authorization"); got != "Bearer alice" {
		t.Fatalf("alice's upstream sent %q", got)
	}
	if got := upBob.Header.Get("Authorization"); got != "Bearer bob" {
		t.Fatalf("bob's upstream sent %q", got)
	}
	upAlice.Send("data: for alice\n\n")
	upBob.Send("data: for bob\n\n")
	for _, c := range []*testkit.Client{alice, alice2} {
		if ev := c.NextData(t); ev.Data != "for alice" {
			t.Fatalf("alice got %q", ev.Data)
		}
	}
	if ev := bob.NextData(t); ev.Data != "for bob" {
		t.Fatalf("bob got %q", ev.Data)
	}
}

func TestKeyPartsCannotMerge(t *testing.T) {
	for _, key := range []string{
		"{http.request.header.A}{http.request.header.B}",
		"{http.request.header.A} {http.request.header.B}", // several tokens: one template
	} {
		t.Run(key, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tkey "+key+"\n}")
			testkit.OpenClient(t, base+"/k", http.Header{"A": {"ab"}, "B": {"c"}})
			origin.NextConn(t)
			testkit.OpenClient(t, base+"/k", http.Header{"A": {"a"}, "B": {"bc"}})
			origin.NextConn(t) // a stream of its own
			testkit.OpenClient(t, base+"/k", http.Header{"A": {"a b"}})
			origin.NextConn(t)
			testkit.OpenClient(t, base+"/k", http.Header{"A": {"a"}, "B": {"b"}})
			origin.NextConn(t)
			testkit.OpenClient(t, base+"/k", http.Header{"A": {"ab"}, "B": {"c"}})
			origin.NoNewConn(t) // the same parts: the first stream
		})
	}
}

func TestEncodedCursorParameterIsStillACursor(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	up, _ := testkit.StartStream(t, origin, base+"/enc", 5)
	c := testkit.OpenClient(t, base+"/enc?last%5Fevent%5Fid=3", nil)
	c.ExpectIDs(t, 4, 5)
	testkit.SendIDs(up, 6, 6)
	c.ExpectIDs(t, 6, 6)
	origin.NoNewConn(t)
}

func TestInjectedCursorIsRefusedAndNeverReachesOthers(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())

	for _, bad := range []string{
		"x%0Aevent:%20pwn%0Adata:%20INJECTED%0A%0A",
		"x%0Devent:%20pwn",
		"x%00y",
		"x%01y",
	} {
		if _, status := testkit.DialClient(t, base+"/s?last_event_id="+bad, nil); status != http.StatusBadRequest {
			t.Fatalf("cursor %s: status %d, want 400", bad, status)
		}
	}
	if n := origin.Total.Load(); n != 0 {
		t.Fatalf("a refused cursor opened %d origin requests", n)
	}

	c := testkit.OpenClient(t, base+"/s", nil)
	up := origin.NextConn(t)
	if got := up.Header.Get("Last-Event-ID"); got != "" {
		t.Fatalf("upstream asked with Last-Event-ID %q, want none", got)
	}
	up.Send("id: 1\ndata: real\n\n")
	if ev := c.NextEvent(t); ev.Type != "" || ev.Data != "real" || ev.ID != "1" {
		t.Fatalf("second client got %+v, want the origin's event", ev)
	}
}

func TestReplayByQueryParameterIsTheSameStream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	up, _ := testkit.StartStream(t, origin, base+"/q?room=1", 10)

	c := testkit.OpenClient(t, base+"/q?last_event_id=7&room=1", nil)
	c.ExpectIDs(t, 8, 10)
	testkit.SendIDs(up, 11, 11)
	c.ExpectIDs(t, 11, 11)
	origin.NoNewConn(t)
}

func TestParseEventFilter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []string
		want   []string // nil: refused
	}{
		{"one", []string{"update"}, []string{"update"}},
		{"list", []string{"update,price"}, []string{"update", "price"}},
		{"spaces trimmed", []string{" update , price "}, []string{"update", "price"}},
		{"duplicates dropped", []string{"a,a", "a,b"}, []string{"a", "b"}},
		{"unicode", []string{"ünïcödé"}, []string{"ünïcödé"}},
		{"inner space kept", []string{"a b"}, []string{"a b"}},
		{"empty", []string{""}, nil},
		{"empty item", []string{"a,,b"}, nil},
		{"only spaces", []string{" "}, nil},
		{"LF", []string{"a\nb"}, nil},
		{"CR", []string{"a\rb"}, nil},
		{"NUL", []string{"a\x00b"}, nil},
		{"tab", []string{"a\tb"}, nil},
		{"DEL", []string{"a\x7fb"}, nil},
		{"not UTF-8", []string{"\xff"}, nil},
		{"too long", []string{strings.Repeat("x", maxFilterTypeLen+1)}, nil},
		{"longest", []string{strings.Repeat("x", maxFilterTypeLen)}, []string{strings.Repeat("x", maxFilterTypeLen)}},
		{"too many", []string{manyTypes(maxFilterTypes + 1)}, nil},
		{"too many over two parameters", []string{manyTypes(maxFilterTypes), "extra"}, nil},
		{"most", []string{manyTypes(maxFilterTypes) + ",t0"}, strings.Split(manyTypes(maxFilterTypes), ",")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseEventFilter(tc.values)
			switch {
			case tc.want == nil && err == nil:
				t.Fatalf("%q: accepted as %q", tc.values, got)
			case tc.want != nil && err != nil:
				t.Fatalf("%q: %v", tc.values, err)
			case tc.want != nil && !slices.Equal(got, tc.want):
				t.Fatalf("%q: got %q, want %q", tc.values, got, tc.want)
			}
		})
	}
}

// manyTypes is a list of n distinct event types.
func manyTypes(n int) string {
	types := make([]string, n)
	for i := range types {
		types[i] = fmt.Sprintf("t%d", i)
	}
	return strings.Join(types, ",")
}

func TestFilterParamIsNoPartOfTheStream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tfilter_param events\n}")
	testkit.OpenClient(t, base+"/f?x=1&events=a", nil)
	up := origin.NextConn(t)
	if up.Path != "/f?x=1" {
		t.Fatalf("upstream request %q, want /f?x=1", up.Path)
	}
	testkit.OpenClient(t, base+"/f?%65vents=b&x=1", nil) // its name escaped
	testkit.OpenClient(t, base+"/f?x=1", nil)
	origin.NoNewConn(t) // one stream
}

// The README's recipes for per-user streams read by a page, which cannot
// set request headers on an EventSource: a query token, or a session
// cookie, turned into the upstream's credential.

func TestPerUserStreamsByQueryToken(t *testing.T) {
	origin := testkit.NewOrigin(t)
	accessLog := filepath.Join(t.TempDir(), "access.log")
	base := testkit.StartCaddy(t, fmt.Sprintf(`log {
		output file %s
		format filter {
			request>uri query {
				delete token
			}
		}
	}
	sse_fanout %s {
		key {http.request.uri.query.token}
		key_ignore_query token
		header_up Authorization "Bearer {http.request.uri.query.token}"
	}`, accessLog, origin.URL()))
	alice := testkit.OpenClient(t, base+"/me?room=1&token=alice-secret", nil)
	upAlice := origin.NextConn(t)
	bob := testkit.OpenClient(t, base+"/me?room=1&token=bob-secret", nil)
	upBob := origin.NextConn(t)
	testkit.OpenClient(t, base+"/me?token=alice-secret&room=1", nil) // alice's second tab
	origin.NoNewConn(t)
	for _, tc := range []struct {
		up   *testkit.OriginConn
		want string
	}{{upAlice, "Bearer alice-secret"}, {upBob, "Bearer bob-secret"}} {
		if got := tc.up.Header.Get("Authorization"); got != tc.want {
			t.Errorf("upstream Authorization %q, want %q", got, tc.want)
		}
		if tc.up.Path != "/me?room=1" {
			t.Errorf("upstream request %q: the token must not reach the origin's URL", tc.up.Path)
		}
	}
	upAlice.Send("data: for alice\n\n")
	upBob.Send("data: for bob\n\n")
	if ev := alice.NextData(t); ev.Data != "for alice" {
		t.Fatalf("alice got %q", ev.Data)
	}
	if ev := bob.NextData(t); ev.Data != "for bob" {
		t.Fatalf("bob got %q", ev.Data)
	}
	registries.Range(func(_, value any) bool {
		for _, st := range value.(*registry).statuses() {
			if strings.Contains(st.Key, "secret") || strings.Contains(st.UpstreamURL, "secret") {
				t.Errorf("the admin API shows the token: %+v", st)
			}
		}
		return true
	})
	testkit.Eventually(t, "the requests to be logged", func() bool {
		b, _ := os.ReadFile(accessLog)
		return strings.Count(string(b), `"uri":"/me?`) >= 3
	})
	if b, _ := os.ReadFile(accessLog); strings.Contains(string(b), "secret") {
		t.Fatalf("the access log holds the token:\n%s", b)
	}
}

func TestPerUserStreamsBySessionCookie(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+` {
		key {http.request.cookie.session}
		header_up Cookie "session={http.request.cookie.session}"
	}`)
	testkit.OpenClient(t, base+"/me", http.Header{"Cookie": {"theme=dark; session=alice-s"}})
	upAlice := origin.NextConn(t)
	testkit.OpenClient(t, base+"/me", http.Header{"Cookie": {"session=bob-s"}})
	upBob := origin.NextConn(t)
	testkit.OpenClient(t, base+"/me", http.Header{"Cookie": {"session=alice-s"}})
	origin.NoNewConn(t)
	if got := upAlice.Header.Get("Cookie"); got != "session=alice-s" {
		t.Errorf("alice's upstream Cookie %q: only the session, never the client's other cookies", got)
	}
	if got := upBob.Header.Get("Cookie"); got != "session=bob-s" {
		t.Errorf("bob's upstream Cookie %q", got)
	}
}

// rawStatus sends a GET for target exactly as written (no client cleans
// or escapes it) and returns the answer's status.
func rawStatus(t *testing.T, base, target string) int {
	t.Helper()
	conn := rawDial(t, base, target, "Connection: close")
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(testkit.WaitTimeout))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: reading the answer: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// escapingPaths are request paths that leave the base path, or could,
// for some origin: by dot segments plain or encoded, by an encoded slash
// or a backslash next to a dot segment, or by a path parameter on one.
var escapingPaths = []string{
	"/../admin/keys",
	"/%2e%2e/admin/keys",
	"/.%2e/admin/keys",
	"/%2E%2E/admin/keys",
	"/..%2fadmin/keys",
	"/..%2Fadmin/keys",
	"/a/../../admin/keys",
	"/a/%2e%2e/%2e%2e/admin/keys",
	"/a%2f..%2f..%2fadmin/keys",
	"/a%2fb/../..",                  // two segments to an origin that decodes %2f, one to us
	"/a%2fb/..",                     // the same: what .. removes depends on the origin
	`/..\admin/keys`,                // a backslash is a separator to some origins
	"/..%5cadmin/keys",              //
	`/a\b/..`,                       //
	"/..;/admin/keys",               // Tomcat drops ;params, then sees ..
	"/a/..;x/../admin/keys",         //
	"/./../admin/keys",              //
	"/a/b/../../../admin/keys",      //
	"/a/%2e%2e%2f%2e%2e/admin/keys", //
}

func TestRequestPathCannotLeaveTheBase(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+"/sse")
	for _, p := range escapingPaths {
		if status := rawStatus(t, base, p); status != http.StatusBadRequest {
			t.Errorf("GET %s: status %d, want 400", p, status)
		}
	}
	if n := origin.Total.Load(); n != 0 {
		t.Fatalf("refused paths reached the origin: %d requests", n)
	}

	// Dot segments that stay within the base are removed, on the decoded
	// path: the origin sees none, and the stream is the clean path's.
	for _, tc := range []struct{ path, want string }{
		{"/a/../b", "/sse/b"},
		{"/a/./c/%2e%2e/d/", "/sse/a/d/"},
		{"/e/f/..", "/sse/e/"},
		{"/g%2Fh/i", "/sse/g%2Fh/i"}, // an encoded slash without dot segments is kept as it is
	} {
		testkit.OpenClient(t, base+tc.path, nil)
		if up := origin.NextConn(t); up.Path != tc.want {
			t.Errorf("GET %s: upstream %q, want %q", tc.path, up.Path, tc.want)
		}
	}
	testkit.OpenClient(t, base+"/b", nil) // the stream of /a/../b
	origin.NoNewConn(t)
}

func TestRequestPathBehindAPathMatcherCannotLeaveTheBase(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, fmt.Sprintf(`handle_path /strip/* {
		sse_fanout %[1]s/api/sse
	}
	handle /keep/* {
		sse_fanout %[1]s/api
	}`, origin.URL()))
	// Caddy's path matcher sees the cleaned path, /keep/x, and matches; the
	// handler sees the path as sent, whose dot segments leave /api.
	for _, p := range []string{
		"/keep/../../keep/x",
		"/keep/%2e%2e/%2e%2e/keep/x",
		"/keep/a/../../../keep/x",
	} {
		if status := rawStatus(t, base, p); status != http.StatusBadRequest {
			t.Errorf("GET %s: status %d, want 400", p, status)
		}
	}
	if n := origin.Total.Load(); n != 0 {
		t.Fatalf("refused paths reached the origin: %d requests", n)
	}
	// handle_path strips its prefix from the cleaned path, and cleans what
	// is left (decoded), so it stays within the base.
	for _, tc := range []struct{ path, want string }{
		{"/strip/a/../../../strip/x", "/api/sse/x"},
		{"/strip/a/%2e%2e/%2e%2e/%2e%2e/strip/x", "/api/sse/strip/x"},
	} {
		testkit.OpenClient(t, base+tc.path, nil)
		if up := origin.NextConn(t); up.Path != tc.want {
			t.Errorf("GET %s: upstream %q, want %q", tc.path, up.Path, tc.want)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{ // want "": refused
		{"", ""},
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"/a.b/c..d/...", "/a.b/c..d/..."},
		{"/.", "/"},
		{"/a/..", "/"},
		{"/a/b/..", "/a/"},
		{"/a/./b/.", "/a/b/"},
		{"/a//../b", "/a/b"},
		{"/a/%2E/b", "/a/b"},
		{"/x%2Fy", "/x%2Fy"},
		{"/x%2Fy/.", ""},
		{"/%5c/..", ""},
		{"/..", ""},
		{"*", ""},
		{"/.;/a", ""},
	} {
		got, err := cleanPath(tc.in)
		switch {
		case tc.want == "" && tc.in != "" && err == nil:
			t.Errorf("cleanPath(%q) = %q, want errBadPath", tc.in, got)
		case (tc.want != "" || tc.in == "") && (err != nil || got != tc.want):
			t.Errorf("cleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// A per-request placeholder's value in a header_up value must be one
// token: a comma, semicolon, space, quote, backslash or control character
// in it could add cookies, credentials or header lines of the client's
// choosing to the origin's request.

func TestHeaderUpCookieValueCannotAddCookies(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+` {
		key {http.request.cookie.session}
		header_up Cookie "session={http.request.cookie.session}"
	}`)
	for _, cookie := range []string{
		"session=abc, admin=1, role=superuser",
		"session=abc,admin=1",
		"session=abc admin=1",
		`session="abc, admin=1"`,
	} {
		if _, status := testkit.DialClient(t, base+"/me", http.Header{"Cookie": {cookie}}); status != http.StatusBadRequest {
			t.Errorf("Cookie %q: status %d, want 400", cookie, status)
		}
	}
	if n := origin.Total.Load(); n != 0 {
		t.Fatalf("refused requests reached the origin: %d", n)
	}
	testkit.OpenClient(t, base+"/me", http.Header{"Cookie": {"session=alice-s.1_~"}})
	if got := origin.NextConn(t).Header.Get("Cookie"); got != "session=alice-s.1_~" {
		t.Fatalf("upstream Cookie %q", got)
	}
}

func TestHeaderUpAuthorizationValueIsOneToken(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+` {
		key {http.request.header.X-Token} {http.request.uri.query.token} {http.request.uri.query.whole}
		key_ignore_query token whole
		header_up X-Whole {http.request.uri.query.whole}
		header_up Authorization "Bearer {http.request.header.X-Token}"
		header_up X-Query-Token "Bearer {http.request.uri.query.token}"
	}`)
	// A placeholder that is a whole header_up value is one token too, but
	// for a client's header copied whole (TestPerUserStreams), which only
	// holds no control character.
	for _, tc := range []struct {
		name   string
		query  string
		tokens []string
	}{
		{"space", "", []string{"abc def"}},
		{"comma", "", []string{"abc,Basic YWRtaW4="}},
		{"two headers, joined by a comma", "", []string{"abc", "def"}},
		{"semicolon", "", []string{"abc;def"}},
		{"quote", "", []string{`abc"def`}},
		{"backslash", "", []string{`abc\def`}},
		{"tab", "", []string{"abc\tdef"}},
		{"CR LF", "?token=abc%0D%0AX-Admin:%201", nil},
		{"LF", "?token=abc%0AX-Admin:%201", nil},
		{"NUL", "?token=abc%00def", nil},
		{"DEL", "?token=abc%7Fdef", nil},
		{"space in the query", "?token=abc%20def", nil},
		{"plus in the query", "?token=abc+def", nil}, // a space, decoded
		{"a whole value from the query", "?whole=abc%20def", nil},
		{"CR LF in a whole value from the query", "?whole=abc%0D%0AX-Admin:%201", nil},
	} {
		header := http.Header{}
		if tc.tokens != nil {
			header["X-Token"] = tc.tokens
		}
		if _, status := testkit.DialClient(t, base+"/me"+tc.query, header); status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", tc.name, status)
		}
	}
	if n := origin.Total.Load(); n != 0 {
		t.Fatalf("refused requests reached the origin: %d", n)
	}
	// The operator's literal text around a placeholder keeps its space.
	testkit.OpenClient(t, base+"/me?token=q.1-_~%2B/=", http.Header{"X-Token": {"h.1-_~+/="}})
	up := origin.NextConn(t)
	if got := up.Header.Get("Authorization"); got != "Bearer h.1-_~+/=" {
		t.Errorf("upstream Authorization %q", got)
	}
	if got := up.Header.Get("X-Query-Token"); got != "Bearer q.1-_~+/=" {
		t.Errorf("upstream X-Query-Token %q", got)
	}
}

func TestFitsHeader(t *testing.T) {
	for _, tc := range []struct {
		value       string
		wholeHeader bool
		want        bool
	}{
		{"abc.DEF-1_~+/=:@!", false, true},
		{"", false, true},
		{"ünï", false, true},
		{"a b", false, false},
		{"a,b", false, false},
		{"a;b", false, false},
		{`a"b`, false, false},
		{`a\b`, false, false},
		{"a\tb", false, false},
		{"a\r\nb", false, false},
		{"a\x00b", false, false},
		{"a\x7fb", false, false},
		{"Bearer a, Basic b; c=\"d\\\"\"", true, true},
		{"a\tb", true, false},
		{"a\r\nX: b", true, false},
		{"a\x00b", true, false},
		{"a\x7fb", true, false},
	} {
		if got := fitsHeader(tc.value, tc.wholeHeader); got != tc.want {
			t.Errorf("fitsHeader(%q, %v) = %v, want %v", tc.value, tc.wholeHeader, got, tc.want)
		}
	}
}

func TestQueryBytesAQueryCannotHoldAreEscapedUpstream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	// Over HTTP/1.1, Go's server passes on what no query may hold but a
	// space: #, quotes, brackets, braces, other bytes, a bare %.
	for _, tc := range []struct{ target, want string }{
		{"/q?a=1#frag&b=\"x\"<y>{z}|^`[]\\", "/q?a=1%23frag&b=%22x%22%3Cy%3E%7Bz%7D%7C%5E%60%5B%5D%5C"},
		{"/q?a=100%&b=%zz&c=%4", "/q?a=100%25&b=%25zz&c=%254"},
		{"/q?n=\xc3\xbc\xff", "/q?n=%C3%BC%FF"},
		{"/q?kept=a+b%20c%2F/?:@!$'()*,;=-._~", "/q?kept=a+b%20c%2F/?:@!$'()*,;=-._~"}, // all a query may hold, as it is
	} {
		rc := dialRaw(t, base, tc.target)
		if !strings.Contains(rc.status, " 200 ") {
			t.Fatalf("GET %q: %s", tc.target, rc.status)
		}
		if up := origin.NextConn(t); up.Path != tc.want {
			t.Errorf("GET %q: upstream %q, want %q", tc.target, up.Path, tc.want)
		}
	}
	// The escaped query is the stream's: the same as the one sent escaped.
	testkit.OpenClient(t, base+"/q?a=100%25&b=%25zz&c=%254", nil)
	origin.NoNewConn(t)
}

func TestQuerySpacesOverHTTP2AreEscapedUpstream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	addr, hc := startHTTP2Caddy(t, origin.URL(), "")
	// An HTTP/2 :path may hold a space, which over HTTP/1.1 upstream would
	// end the request target: "GET /events?a=1 HTTP/1.0 HTTP/1.1".
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque, req.URL.RawQuery = "/events", "a=1 HTTP/1.0"
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("%s over %s, want 200 over HTTP/2", resp.Status, resp.Proto)
	}
	if up := origin.NextConn(t); up.Path != "/events?a=1%20HTTP/1.0" {
		t.Fatalf("upstream %q, want /events?a=1%%20HTTP/1.0", up.Path)
	}
}

// TestStreamKeysAreBounded: a stream's key is shared state that outlives
// its request (until idle_close), max_streams of them at once. A path and
// query over maxStreamKeyLen is answered 414, a key value over it 431,
// before any stream opens; at the bound, a stream opens.
func TestStreamKeysAreBounded(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tkey {http.request.header.X-Room}\n}")
	long := "/" + strings.Repeat("a", maxStreamKeyLen) // one byte over, as the key is path and query
	for _, tc := range []struct {
		what, url string
		header    http.Header
		want      int
	}{
		{"a long path", base + long, nil, http.StatusRequestURITooLong},
		{"a long query", base + "/q?" + strings.Repeat("b", maxStreamKeyLen), nil, http.StatusRequestURITooLong},
		{"a long key value", base + "/k", http.Header{"X-Room": {strings.Repeat("c", maxStreamKeyLen+1)}}, http.StatusRequestHeaderFieldsTooLarge},
	} {
		if c, status := testkit.DialClient(t, tc.url, tc.header); status != tc.want {
			if c != nil {
				c.Close()
			}
			t.Errorf("%s: status %d, want %d", tc.what, status, tc.want)
		}
	}
	if n := origin.Total.Load(); n != 0 {
		t.Fatalf("refused requests reached the origin: %d requests", n)
	}
	// At the bounds: the key's value is the header's, quoted.
	c, status := testkit.DialClient(t, base+long[:maxStreamKeyLen], http.Header{"X-Room": {strings.Repeat("c", maxStreamKeyLen-2)}})
	if status != http.StatusOK {
		t.Fatalf("a path and a key value at the bound: status %d, want 200", status)
	}
	defer c.Close()
	if up := origin.NextConn(t); len(up.Path) != maxStreamKeyLen {
		t.Fatalf("upstream path of %d bytes, want the %d the client asked for", len(up.Path), maxStreamKeyLen)
	}
}
