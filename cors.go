package ssefanout

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// This file is the cors subdirective: which pages of other origins may
// read the streams, as new EventSource(url, {withCredentials: true}) from
// https://app.example reading https://events.example does.
//
// The answer is decided per request, from its Origin header, and written
// in the response's head before it starts, so a detached client gets it
// too; the upstream response, which every client of a stream shares,
// has nothing to do with it. An EventSource makes no preflight request:
// it sends a GET, with Last-Event-ID when it reconnects, and reads the
// answer only if Access-Control-Allow-Origin allows its page's origin,
// which, with credentials, must be that origin itself, never "*".

// corsPolicy is the cors subdirective, compiled.
type corsPolicy struct {
	origins map[string]struct{} // origins whose pages may read, with credentials
	any     bool                // "*": pages of any other origin may read, without credentials
}

// parseCORS compiles the cors origins: "*", or origins as a browser
// writes them in its Origin header (scheme, host and port).
func parseCORS(list []string) (*corsPolicy, error) {
	if len(list) == 0 {
		return nil, nil
	}
	p := &corsPolicy{origins: make(map[string]struct{}, len(list))}
	for _, s := range list {
		if s == "*" {
			p.any = true
			continue
		}
		origin, err := canonicalOrigin(s)
		if err != nil {
			return nil, fmt.Errorf("bad cors origin '%s': %v", s, err)
		}
		p.origins[origin] = struct{}{}
	}
	return p, nil
}

// canonicalOrigin returns s, an http or https origin, as a browser
// serializes it in an Origin header: the scheme and host in lower case,
// the port only when it is not the scheme's default, and nothing else.
func canonicalOrigin(s string) (string, error) {
	u, err := url.Parse(s) // it lowercases the scheme
	switch {
	case err != nil:
		return "", errors.New("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", errors.New("want http:// or https:// and a host, such as https://app.example")
	case u.Host == "" || u.User != nil || u.Opaque != "":
		return "", errors.New("want a host, and no user")
	case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", errors.New("an origin has no path, query or fragment")
	case strings.Contains(u.Host, "*"):
		return "", errors.New("wildcards are not supported; list each origin, or * for any without credentials")
	}
	scheme, host, port := u.Scheme, strings.ToLower(u.Hostname()), u.Port()
	if port == map[string]string{"http": "80", "https": "443"}[scheme] {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, nil
}

// apply sets the CORS headers of the answer to r: for an allowed origin,
// Access-Control-Allow-Origin with that origin and
// Access-Control-Allow-Credentials; under "*", for any other origin,
// Access-Control-Allow-Origin "*" alone, which a browser never accepts
// with credentials. Vary: Origin always, since the answer depends on it.
func (p *corsPolicy) apply(h http.Header, r *http.Request) {
	if !slices.Contains(h.Values("Vary"), "Origin") {
		h.Add("Vary", "Origin")
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	if _, ok := p.origins[origin]; ok {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		return
	}
	if p.any {
		h.Set("Access-Control-Allow-Origin", "*")
	}
}
