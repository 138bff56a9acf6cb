package ssefanout

import (
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// This file maps a client's request to what it asks of the hub: which
// stream, its upstream URL and headers, and the cursor to resume from.

// lastEventIDParam is the query parameter a first connect may carry its
// cursor in, since a browser can set the Last-Event-ID header only on its
// own reconnects. It is never part of the stream key nor sent upstream.
const lastEventIDParam = "last_event_id"

// streamRequest is what one client asks for.
type streamRequest struct {
	key            string      // the stream's identity in the registry
	upstreamURL    string      // where its upstream connection reads
	headerUp       http.Header // sent upstream, if this client opens the stream
	lastEventID    string      // the cursor to resume after
	hasLastEventID bool
}

// streamRequestOf maps r to the stream it asks for.
func (h *Handler) streamRequestOf(r *http.Request) streamRequest {
	query, lastEventID, hasLastEventID := h.filterQuery(r.URL.RawQuery)
	if header := r.Header.Get("Last-Event-ID"); header != "" {
		lastEventID, hasLastEventID = header, true // the header is the newer cursor
	}
	path := r.URL.EscapedPath()
	key := path
	if query != "" {
		key += "?" + query
	}
	sr := streamRequest{
		key:            key,
		upstreamURL:    h.upstreamURL(r.URL, query),
		headerUp:       h.reg.settings.Load().headerUp,
		lastEventID:    lastEventID,
		hasLastEventID: hasLastEventID && lastEventID != "",
	}
	if h.Key != "" || h.perRequestHeaders {
		repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if repl == nil {
			repl = caddy.NewReplacer()
		}
		if h.Key != "" {
			// The upstream URL stays part of the key: a key may split
			// streams, never merge two that read different URLs.
			sr.key += "\n" + repl.ReplaceAll(h.Key, "")
		}
		if h.perRequestHeaders {
			sr.headerUp = make(http.Header, len(sr.headerUp))
			for name, values := range h.reg.settings.Load().headerUp {
				for _, v := range values {
					sr.headerUp.Add(name, repl.ReplaceAll(v, ""))
				}
			}
		}
	}
	return sr
}

// filterQuery removes from a raw query the last_event_id parameter, which
// it returns, and the parameters named in key_ignore_query.
func (h *Handler) filterQuery(rawQuery string) (kept, lastEventID string, hasLastEventID bool) {
	if rawQuery == "" {
		return "", "", false
	}
	if len(h.KeyIgnoreQuery) == 0 && !strings.Contains(rawQuery, lastEventIDParam) {
		return rawQuery, "", false
	}
	var parts []string
	for _, part := range strings.Split(rawQuery, "&") {
		rawName, rawValue, _ := strings.Cut(part, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			parts = append(parts, part)
			continue
		}
		if name == lastEventIDParam {
			if v, err := url.QueryUnescape(rawValue); err == nil {
				lastEventID, hasLastEventID = v, true
			}
			continue
		}
		if h.ignoresQueryParam(name) {
			continue
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, "&"), lastEventID, hasLastEventID
}

// ignoresQueryParam reports whether key_ignore_query names the parameter.
func (h *Handler) ignoresQueryParam(name string) bool {
	for _, ignored := range h.KeyIgnoreQuery {
		if name == ignored {
			return true
		}
	}
	return false
}

// upstreamURL is the base URL with the request's path and the given query
// appended.
func (h *Handler) upstreamURL(u *url.URL, query string) string {
	target := *h.base
	target.Path = strings.TrimSuffix(h.base.Path, "/") + u.Path
	target.RawPath = ""
	if h.base.RawPath != "" || u.RawPath != "" {
		target.RawPath = strings.TrimSuffix(h.base.EscapedPath(), "/") + u.EscapedPath()
	}
	target.RawQuery = query
	return target.String()
}

// retryAfter returns a Retry-After value in seconds, jittered so that
// refused clients do not all come back at once.
func retryAfter() string {
	return strconv.Itoa(2 + rand.IntN(7))
}
