package ssefanout

import (
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
)

// This file maps a client's request to what it asks of the hub: which
// stream, its upstream URL and headers, and the cursor to resume from. It
// is the trust boundary for what a client sends: the cursor is validated
// here, and carries its origin in its type from then on.

// lastEventIDParam is the query parameter a first connect may carry its
// cursor in, since a browser can set the Last-Event-ID header only on its
// own reconnects. It is never part of the stream key nor sent upstream.
const lastEventIDParam = "last_event_id"

// maxCursorLen is the longest cursor (Last-Event-ID or last_event_id) a
// client may resume with. A longer one is not looked up, sent upstream or
// echoed: the client is served as one whose cursor nothing can serve.
const maxCursorLen = 1024

// clientCursor is the Last-Event-ID a client sent, validated by
// parseCursor: it holds no control character and at most maxCursorLen
// bytes. It is only ever a lookup key for that client's own replay, or the
// Last-Event-ID of its own catch-up (catchup.go): never an id line, never
// in the stream's own upstream request, and never anything another client
// is sent.
type clientCursor string

// errBadCursor refuses a request whose cursor holds a control character.
// An origin's id can hold no CR, LF or NUL and a header can hold no other
// control character, so only a forged request carries one.
var errBadCursor = errors.New("bad Last-Event-ID: it holds a control character")

// parseCursor validates the cursor a client sent. It reports usable false
// for one longer than maxCursorLen, and an error for one that holds a
// control character other than a tab.
func parseCursor(raw string) (_ clientCursor, usable bool, _ error) {
	for i := 0; i < len(raw); i++ {
		if b := raw[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return "", false, errBadCursor
		}
	}
	if len(raw) > maxCursorLen {
		return "", false, nil
	}
	return clientCursor(raw), true, nil
}

// maxFilterTypes bounds how many event types a client's filter may name,
// and maxFilterTypeLen the bytes of each: a filter is matched against
// every frame the client is not sent, so its cost must stay small.
const (
	maxFilterTypes   = 32
	maxFilterTypeLen = 128
)

// errBadFilter refuses a request whose filter parameter is not a list of
// event types. The value is not echoed.
var errBadFilter = errors.New("bad event filter: want a comma-separated list of event types, at most 32, each at most 128 bytes of UTF-8 without control characters")

// parseEventFilter validates the values of the filter parameter a client
// sent, each a comma-separated list of event types, and returns their
// union: spaces around a type are trimmed and duplicates dropped. An
// empty list or type, too many or too long types, a control character
// (CR, LF and NUL among them) or invalid UTF-8 is errBadFilter. An
// origin's event type can hold neither a line end nor, in a list, a
// comma, so nothing that could be sent is refused but types with a comma
// or spaces at either end, which cannot be chosen.
func parseEventFilter(values []string) (eventFilter, error) {
	var types eventFilter
	for _, value := range values {
		for item := range strings.SplitSeq(value, ",") {
			typ := strings.Trim(item, " ")
			if typ == "" || len(typ) > maxFilterTypeLen || !utf8.ValidString(typ) {
				return nil, errBadFilter
			}
			for _, r := range typ {
				if r < ' ' || r == 0x7f {
					return nil, errBadFilter
				}
			}
			if !slices.Contains(types, typ) {
				types = append(types, typ)
			}
			if len(types) > maxFilterTypes {
				return nil, errBadFilter
			}
		}
	}
	return types, nil
}

// streamRequest is what one client asks for.
type streamRequest struct {
	key         string      // the stream's identity in the registry
	label       string      // the key as logs and the admin API show it: no secret in it
	upstreamURL string      // where its upstream connection reads
	headerUp    http.Header // sent upstream, if this client opens the stream
	// via are the sse_fanout nodes the request's Via names (tier.go):
	// client input, which decides only whether this request is refused
	// as a loop and what this client is sent.
	via []string

	cursor    clientCursor // the cursor to resume after, if hasCursor
	hasCursor bool
	// unusableCursor is set when the client sent a cursor too long to
	// use: it is served as one that nothing can serve.
	unusableCursor bool

	filter   eventFilter // the event types the client is sent; nil: all
	rewind   int         // without a cursor, how many events of the buffer it is sent first
	encoding *encoding   // what its stream is compressed in; nil: none (compress.go)
	// pageMember is set for a member of a multiplexed page but its first:
	// the page's writer serves it, waiting on the first member's wakeups
	// (newMuxClient), so it needs no request writer of its own.
	pageMember bool
}

// requestMap maps a handler's requests to the streams they ask for. A
// handler makes it once, when it is provisioned.
type requestMap struct {
	base              *url.URL        // the upstream base URL
	key               keyTemplate     // the key subdirective, parsed
	ignoreQuery       []string        // key_ignore_query
	headerUp          http.Header     // header_up, global placeholders replaced
	perRequestHeaders headerTemplates // header_up parsed, if some value has a per-request placeholder; else nil
	filterParam       string          // filter_param: the parameter of a client's event-type filter
	rewind            int             // rewind: events of the buffer a client without a cursor is sent first
	muxParam          string          // multiplex_param: the parameter that lists a multiplexed request's members; "": none
	muxMembers        []string        // multiplex_members: the patterns a member's path must match
	muxMax            int             // multiplex_max: the most members of one request
}

// streamRequestOf maps r to the stream it asks for. It fails only for a
// path that leaves the base path or could (errBadPath), a cursor that no
// browser sends (errBadCursor), a filter that is not one (errBadFilter)
// or a per-request header_up value that would change its header
// (errBadHeaderValue), which the caller answers with 400, and for a key
// too long (errStreamURLTooLong, errKeyValueTooLong: 414 and 431).
func (m *requestMap) streamRequestOf(r *http.Request) (streamRequest, error) {
	path, err := cleanPath(r.URL.EscapedPath())
	if err != nil {
		return streamRequest{}, err
	}
	q := m.filterQuery(r.URL.RawQuery)
	return m.singleRequestOf(r, path, &q)
}

// singleRequestOf maps r, for the escaped path (cleanPath's) with the
// query q, to the stream it asks for, with its cursor.
func (m *requestMap) singleRequestOf(r *http.Request, path string, q *clientQuery) (streamRequest, error) {
	sr, err := m.pathRequestOf(r, path, q)
	if err != nil {
		return sr, err
	}
	if rawCursor, hasCursor := cursorOf(r, q); hasCursor && rawCursor != "" {
		cursor, usable, err := parseCursor(rawCursor)
		if err != nil {
			return sr, err
		}
		sr.cursor, sr.hasCursor, sr.unusableCursor = cursor, usable, !usable
	}
	return sr, nil
}

// requestsOf maps r to the streams it asks for: the one of its path, or,
// when r lists members in the multiplex_param parameter, each member's,
// with the members' names (muxRequestsOf). Its errors are
// streamRequestOf's and muxRequestsOf's, each answered with 400.
func (m *requestMap) requestsOf(r *http.Request) (srs []streamRequest, names []string, err error) {
	path, err := cleanPath(r.URL.EscapedPath())
	if err != nil {
		return nil, nil, err
	}
	q := m.filterQuery(r.URL.RawQuery)
	if !q.hasMembers {
		sr, err := m.singleRequestOf(r, path, &q)
		return []streamRequest{sr}, nil, err
	}
	return m.muxRequestsOf(r, path, &q)
}

// cursorOf returns the cursor r carries, unchecked, and whether it
// carries one: its Last-Event-ID header, else its last_event_id parameter.
func cursorOf(r *http.Request, q *clientQuery) (string, bool) {
	if header := r.Header.Get("Last-Event-ID"); header != "" {
		return header, true // the header is the newer cursor
	}
	return q.cursor, q.hasCursor
}

// maxStreamKeyLen bounds the bytes of a stream's path with its kept query,
// and of the value the key subdirective fills in for a request. A
// stream's key is shared state that outlives the request that opened it
// (until idle_close), max_streams of them at once, so a client must not
// make one of a megabyte. 8 KiB is about the longest request line servers
// take by default (Apache's 8190 bytes, nginx's 8k buffers).
const maxStreamKeyLen = 8 << 10

var (
	// errStreamURLTooLong refuses, with 414, a request whose stream's
	// path and kept query pass maxStreamKeyLen.
	errStreamURLTooLong = fmt.Errorf("the stream's path and query are longer than %d KiB", maxStreamKeyLen>>10)
	// errKeyValueTooLong refuses, with 431, a request for which the key
	// subdirective's value passes maxStreamKeyLen.
	errKeyValueTooLong = fmt.Errorf("the request's stream key (the key subdirective's value) is longer than %d KiB", maxStreamKeyLen>>10)
)

// pathRequestOf maps r to the stream of the escaped path (cleanPath's)
// with the query q kept, without its cursor. A key over maxStreamKeyLen
// is refused.
func (m *requestMap) pathRequestOf(r *http.Request, path string, q *clientQuery) (streamRequest, error) {
	key := path
	if q.kept != "" {
		key += "?" + q.kept
	}
	if len(key) > maxStreamKeyLen {
		return streamRequest{}, errStreamURLTooLong
	}
	sr := streamRequest{
		key:         key,
		label:       key,
		upstreamURL: m.upstreamURL(path, q.kept),
		headerUp:    m.headerUp,
		via:         viaMarks(r.Header.Values("Via"), maxViaMarks),
		rewind:      m.rewind,
	}
	if q.hasFilter {
		filter, err := parseEventFilter(q.filter)
		if err != nil {
			return sr, err
		}
		sr.filter = filter
	}
	if len(m.key) > 0 || m.perRequestHeaders != nil {
		repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if repl == nil {
			repl = caddy.NewReplacer()
		}
		if len(m.key) > 0 {
			// The upstream URL stays part of the key: a key may split
			// streams, never merge two that read different URLs.
			value := m.key.fill(repl)
			if len(value) > maxStreamKeyLen {
				return streamRequest{}, errKeyValueTooLong
			}
			sr.key += "\n" + value
			sr.label += " #" + keyDigest(value)
		}
		if m.perRequestHeaders != nil {
			var err error
			if sr.headerUp, err = m.perRequestHeaders.fill(repl); err != nil {
				return sr, err
			}
		}
	}
	return sr, nil
}

// maxMuxNameLen bounds the bytes of a member's name.
const maxMuxNameLen = 128

var (
	// errBadMuxMember refuses a multiplexed request whose member list is
	// not one. No name is echoed.
	errBadMuxMember = errors.New("bad stream list: want comma-separated names of letters, digits and - . _ ~ /, each a relative path without empty, . or .. segments, at most 128 bytes, each listed once")
	// errMuxMemberNotAllowed refuses a member whose path matches no
	// multiplex_members pattern.
	errMuxMemberNotAllowed = errors.New("a listed stream is not one that may be multiplexed here (multiplex_members)")
)

// errTooManyMembers refuses a request that lists more than max members.
func errTooManyMembers(max int) error {
	return fmt.Errorf("too many streams listed: at most %d (multiplex_max)", max)
}

// muxRequestsOf maps a multiplexed request, of the escaped path (cleanPath's),
// to its members' streams: a member named n is the stream of the path
// path/n with the rest of r's query, exactly as a request for it alone
// would be, with its part of r's composite cursor (mux.go). It returns the
// names as listed. A list that is not one (errBadMuxMember), a member
// whose path matches no multiplex_members pattern
// (errMuxMemberNotAllowed) or more than multiplex_max members is
// refused, as are the errors of a single request; each with 400. A cursor
// that is not a composite one, or longer than any the handler sends, is
// unusable for every member.
func (m *requestMap) muxRequestsOf(r *http.Request, path string, q *clientQuery) ([]streamRequest, []string, error) {
	var names []string
	for _, value := range q.members {
		for name := range strings.SplitSeq(value, ",") {
			if !muxNameOK(name) || slices.Contains(names, name) {
				return nil, nil, errBadMuxMember
			}
			if names = append(names, name); len(names) > m.muxMax {
				return nil, nil, errTooManyMembers(m.muxMax)
			}
		}
	}
	srs := make([]streamRequest, len(names))
	dir := strings.TrimSuffix(path, "/")
	for i, name := range names {
		memberPath := dir + "/" + name // a name holds only unreserved bytes and slashes: escaped as it is
		if !matchesMember(m.muxMembers, memberPath) {
			return nil, nil, errMuxMemberNotAllowed
		}
		sr, err := m.pathRequestOf(r, memberPath, q)
		if err != nil {
			return nil, nil, err
		}
		srs[i] = sr
	}
	rawCursor, hasCursor := cursorOf(r, q)
	if !hasCursor || rawCursor == "" {
		return srs, names, nil
	}
	// The rules of a single cursor hold for the whole and for each part:
	// a control character is refused, a part too long is unusable.
	if _, _, err := parseCursor(rawCursor); err != nil {
		return nil, nil, err
	}
	parts, err := splitMuxCursor(rawCursor, len(names))
	if err != nil || len(rawCursor) > maxMuxCursorLen(len(names)) {
		for i := range srs {
			srs[i].unusableCursor = true
		}
		return srs, names, nil
	}
	for i, part := range parts {
		if part == "" {
			continue // the member had no id
		}
		cursor, usable, err := parseCursor(part)
		if err != nil {
			return nil, nil, err
		}
		srs[i].cursor, srs[i].hasCursor, srs[i].unusableCursor = cursor, usable, !usable
	}
	return srs, names, nil
}

// muxNameOK reports whether name may name a member: a relative path of
// unreserved bytes (RFC 3986) and slashes, at most maxMuxNameLen bytes,
// whose segments are neither empty nor dot segments. So a member's path
// never leaves its request's, needs no escaping, and its name holds no
// colon, which ends a name in the event types (appendMuxType), and no
// comma, which separates names.
func muxNameOK(name string) bool {
	if name == "" || len(name) > maxMuxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if b := name[i]; !unreserved(b) && b != '/' {
			return false
		}
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// matchesMember reports whether a member's escaped path matches one of
// the multiplex_members patterns: a pattern that ends in "*" matches the
// paths that start with what comes before it, any other only itself.
func matchesMember(patterns []string, path string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(path, prefix) || p == path {
			return true
		}
	}
	return false
}

// headerTemplates are header_up values, each parsed as a template.
type headerTemplates map[string][]keyTemplate

// parseHeaderTemplates parses every value of a header as a template.
func parseHeaderTemplates(header http.Header) headerTemplates {
	t := make(headerTemplates, len(header))
	for name, values := range header {
		for _, v := range values {
			t[name] = append(t[name], parseKeyTemplate(v))
		}
	}
	return t
}

// fill returns the header for one request. It fails with
// errBadHeaderValue if a placeholder's value does not fit (fitsHeader).
func (t headerTemplates) fill(repl *caddy.Replacer) (http.Header, error) {
	header := make(http.Header, len(t))
	for name, values := range t {
		for _, tmpl := range values {
			var b strings.Builder
			for _, part := range tmpl {
				if !part.placeholder {
					b.WriteString(part.text) // the operator's, as written
					continue
				}
				value := repl.ReplaceAll(part.text, "")
				if !fitsHeader(value, len(tmpl) == 1 && strings.HasPrefix(part.text, "{http.request.header.")) {
					return nil, errBadHeaderValue
				}
				b.WriteString(value)
			}
			header.Add(name, b.String())
		}
	}
	return header, nil
}

// errBadHeaderValue refuses a request whose value for a per-request
// placeholder in header_up does not fit (fitsHeader). The value is not
// echoed.
var errBadHeaderValue = errors.New("bad request: a value it sends upstream in a header holds a comma, semicolon, space, quote, backslash or control character")

// fitsHeader reports whether a client's value may stand for a placeholder
// in a header_up value. It is the one rule for every per-request value
// sent upstream.
//
// A value holds no control character (tab, CR, LF and NUL among them, and
// DEL), which could end the header or the request. And unless it is a
// client's header copied whole (wholeHeader: header_up X-User
// {http.request.header.X-User}, whose structure is the client's header's),
// it is one token: no comma, semicolon, space, double quote or backslash,
// the bytes by which a header value has parts. So a cookie value in
// "session={http.request.cookie.session}" can add no cookie ("abc, admin=1"
// or "abc; admin=1"), and a token in "Bearer {http.request.header.X-Token}"
// no credential or parameter. The operator's literal text around a
// placeholder ("Bearer ", "session=") is not held to it.
func fitsHeader(value string, wholeHeader bool) bool {
	for i := 0; i < len(value); i++ {
		switch b := value[i]; {
		case b < ' ' || b == 0x7f:
			return false
		case wholeHeader:
		case b == ',', b == ';', b == ' ', b == '"', b == '\\':
			return false
		}
	}
	return true
}

// keyTemplate is a template such as the key subdirective or a header_up
// value, split into its literal text and its placeholders.
type keyTemplate []keyPart

// keyPart is a literal piece of a key template, or one placeholder.
type keyPart struct {
	text        string
	placeholder bool
}

// parseKeyTemplate splits a template into its parts: each {placeholder},
// and the text between them.
func parseKeyTemplate(s string) keyTemplate {
	var parts keyTemplate
	for s != "" {
		i := strings.IndexByte(s, '{')
		j := -1
		if i >= 0 {
			j = strings.IndexByte(s[i:], '}')
		}
		if i < 0 || j < 0 {
			return append(parts, keyPart{text: s})
		}
		if i > 0 {
			parts = append(parts, keyPart{text: s[:i]})
		}
		parts = append(parts, keyPart{text: s[i : i+j+1], placeholder: true})
		s = s[i+j+1:]
	}
	return parts
}

// fill returns the template's value for one request. Each placeholder's
// value is quoted, so that two values can never run into each other:
// "{A}{B}" with A=ab, B=c and with A=a, B=bc are two keys.
func (k keyTemplate) fill(repl *caddy.Replacer) string {
	var b strings.Builder
	for _, part := range k {
		if part.placeholder {
			b.WriteString(strconv.Quote(repl.ReplaceAll(part.text, "")))
		} else {
			b.WriteString(part.text)
		}
	}
	return b.String()
}

// labelKey keys the digests of key values: per process and never shown,
// so a digest cannot be reversed, even for a key with few possible values
// such as a user id, while logs and the admin API of one process agree.
var labelKey = func() []byte {
	b := make([]byte, 32)
	if _, err := crand.Read(b); err != nil {
		panic(err)
	}
	return b
}()

// keyDigest is how a key value, which may hold credentials, is shown.
func keyDigest(value string) string {
	m := hmac.New(sha256.New, labelKey)
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// clientQuery is what filterQuery takes out of a request's query.
type clientQuery struct {
	kept       string   // what the stream key and the upstream URL keep
	cursor     string   // the last_event_id parameter, unescaped, if hasCursor
	hasCursor  bool     //
	filter     []string // the filter_param parameters, unescaped and unchecked, if hasFilter
	hasFilter  bool     //
	members    []string // the multiplex_param parameters, unescaped and unchecked, if hasMembers
	hasMembers bool     //
}

// filterQuery removes from a raw query the parameters that are the
// client's own, which it returns: last_event_id, the filter_param
// parameter and the multiplex_param parameter; and the parameters named in key_ignore_query. Names are
// compared unescaped, so last%5Fevent%5Fid is last_event_id too. What it
// keeps is escaped by escapeQuery.
func (m *requestMap) filterQuery(rawQuery string) clientQuery {
	if rawQuery == "" {
		return clientQuery{}
	}
	if len(m.ignoreQuery) == 0 && !strings.Contains(rawQuery, lastEventIDParam) && !strings.Contains(rawQuery, "%") &&
		(m.filterParam == "" || !strings.Contains(rawQuery, m.filterParam)) &&
		(m.muxParam == "" || !strings.Contains(rawQuery, m.muxParam)) {
		return clientQuery{kept: escapeQuery(rawQuery)}
	}
	var q clientQuery
	var parts []string
	for part := range strings.SplitSeq(rawQuery, "&") {
		rawName, rawValue, _ := strings.Cut(part, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			parts = append(parts, part)
			continue
		}
		switch {
		case name == lastEventIDParam:
			if v, err := url.QueryUnescape(rawValue); err == nil {
				q.cursor, q.hasCursor = v, true
			}
		case name == m.filterParam && name != "":
			v, err := url.QueryUnescape(rawValue)
			if err != nil {
				v = "\x00" // a bad escape is a bad filter
			}
			q.filter, q.hasFilter = append(q.filter, v), true
		case name == m.muxParam && name != "":
			v, err := url.QueryUnescape(rawValue)
			if err != nil {
				v = "\x00" // a bad escape is a bad member
			}
			q.members, q.hasMembers = append(q.members, v), true
		case m.ignoresQueryParam(name):
		default:
			parts = append(parts, part)
		}
	}
	q.kept = escapeQuery(strings.Join(parts, "&"))
	return q
}

// escapeQuery percent-encodes the bytes of a raw query that a query may
// not hold (RFC 3986, section 3.4): a space, which would end the request
// target of an HTTP/1.1 request line, "#", which would start a fragment,
// any other byte but unreserved ones, sub-delims, ":", "@", "/" and "?",
// and a "%" not followed by two hex digits. What a query may hold is kept
// as it is ("a+b", "%2F", the order of parameters), so a valid query is
// returned unchanged; the stream key and the upstream URL use the result,
// so "a=1 b" and "a=1%20b" are one stream.
func escapeQuery(raw string) string {
	i := 0
	for i < len(raw) && queryByteOK(raw, i) {
		i++
	}
	if i == len(raw) {
		return raw
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(raw) + 16)
	b.WriteString(raw[:i])
	for ; i < len(raw); i++ {
		if queryByteOK(raw, i) {
			b.WriteByte(raw[i])
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[raw[i]>>4])
			b.WriteByte(hex[raw[i]&15])
		}
	}
	return b.String()
}

// queryByteOK reports whether raw[i] may stand in a query as it is.
func queryByteOK(raw string, i int) bool {
	switch c := raw[i]; {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '%':
		return i+2 < len(raw) && isHex(raw[i+1]) && isHex(raw[i+2])
	default:
		return strings.IndexByte("-._~!$&'()*+,;=:@/?", c) >= 0
	}
}

// isHex reports whether c is a hex digit.
func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// ignoresQueryParam reports whether key_ignore_query names the parameter.
func (m *requestMap) ignoresQueryParam(name string) bool {
	for _, ignored := range m.ignoreQuery {
		if name == ignored {
			return true
		}
	}
	return false
}

// upstreamURL is the base URL with the given escaped path (cleanPath's)
// and query appended.
func (m *requestMap) upstreamURL(path, query string) string {
	target := *m.base
	target.RawPath = basePath(m.base) + path
	target.Path, _ = url.PathUnescape(target.RawPath) // both parts are valid escapes
	target.RawQuery = query
	return target.String()
}

// basePath is the escaped path of an upstream base URL without its
// trailing slash: what every upstream path starts with.
func basePath(base *url.URL) string {
	return strings.TrimSuffix(base.EscapedPath(), "/")
}

// errBadPath refuses a request whose path leaves the upstream base path,
// or could for some origin. The path is not echoed.
var errBadPath = errors.New("bad request path: it leaves the upstream base path, or could")

// cleanPath removes the dot segments of an escaped path (RFC 3986,
// section 5.2.4), judged on its decoded segments, so "%2e%2e" is "..".
// The segments it keeps stay escaped as they were: an encoded slash in
// one stays one. It is the one rule for every path sent upstream: a
// client's request path (appended to the base path) and a redirect's.
//
// It fails with errBadPath for a path that does not start with "/", one
// whose ".." climbs above its start, and one whose dot segments some
// origin would read otherwise: dot segments beside a segment holding an
// encoded slash or a backslash (raw or %5c), which some origins split on,
// so what ".." removes depends on the origin; or a segment that such a
// split, or cutting a ";" parameter as Tomcat does, turns into a dot
// segment ("..%2f", "..\", "..;x").
func cleanPath(escaped string) (string, error) {
	if escaped == "" {
		return "", nil
	}
	if escaped[0] != '/' {
		return "", errBadPath
	}
	if !strings.Contains(escaped, ".") && !strings.Contains(escaped, "%2e") && !strings.Contains(escaped, "%2E") {
		return escaped, nil // no dot segment, plain or encoded
	}
	segments := strings.Split(escaped[1:], "/")
	kept := make([]string, 0, len(segments))
	dots, splits, lastDot := false, false, false
	for _, seg := range segments {
		decoded, err := url.PathUnescape(seg)
		if err != nil {
			return "", errBadPath
		}
		lastDot = decoded == "." || decoded == ".."
		switch {
		case decoded == ".":
			dots = true
		case decoded == "..":
			dots = true
			if len(kept) == 0 {
				return "", errBadPath
			}
			kept = kept[:len(kept)-1]
		case hasDotPiece(decoded):
			return "", errBadPath
		default:
			splits = splits || strings.ContainsAny(decoded, `/\`)
			kept = append(kept, seg)
		}
	}
	if dots && splits {
		return "", errBadPath
	}
	path := "/" + strings.Join(kept, "/")
	if lastDot && len(kept) > 0 {
		path += "/" // "/a/b/.." is "/a/"
	}
	return path, nil
}

// hasDotPiece reports whether a decoded path segment holds a dot segment
// once split at slashes and backslashes, or cut at a ";" parameter.
func hasDotPiece(segment string) bool {
	for piece := range strings.FieldsFuncSeq(segment, func(r rune) bool { return r == '/' || r == '\\' }) {
		if piece, _, _ = strings.Cut(piece, ";"); piece == "." || piece == ".." {
			return true
		}
	}
	return false
}

// withinBase reports whether an escaped path, such as a redirect's, is
// base (an escaped path without a trailing slash) or below it, by the
// rule of cleanPath.
func withinBase(base, escaped string) bool {
	path, err := cleanPath(escaped)
	if err != nil {
		return false
	}
	return base == "" || path == base || strings.HasPrefix(path, base+"/")
}

// redactURL returns a URL as logs, metrics and the admin API show it: any
// user and password in it are replaced. It works on text that does not
// parse as a URL, too.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return raw
	}
	return scheme + "://redacted" + rest[at:]
}

// retryAfter returns a Retry-After value in seconds, jittered so that
// refused clients do not all come back at once.
func retryAfter() string {
	return strconv.Itoa(2 + rand.IntN(7))
}
