package ssefanout

// The README and docs/: what the tests can check of them.

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// TestReadmeThreatModelCitesRealTests: the Threat model
// (docs/threat-model.md) is one table, each of its rows names the tests
// that hold its rule, and each test it names is a func in one of the
// repository's _test.go files, so that a renamed or deleted test cannot
// leave a rule the docs claim is held unheld.
func TestReadmeThreatModelCitesRealTests(t *testing.T) {
	doc, err := os.ReadFile("docs/threat-model.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)

	defined := map[string]bool{}
	funcName := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)\w+)\(`)
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "vendor" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range funcName.FindAllStringSubmatch(string(src), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	cited := regexp.MustCompile("`((?:Test|Fuzz)\\w+)`")
	tables, rows := 0, 0
	inTable := false
	for line := range strings.Lines(section) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		if !inTable {
			inTable = true
			tables++
			continue // the header row
		}
		if strings.HasPrefix(line, "|---") {
			continue
		}
		rows++
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		heldBy := cells[len(cells)-1]
		names := cited.FindAllStringSubmatch(heldBy, -1)
		if len(names) == 0 {
			t.Errorf("a Threat model row names no test: %.80s", line)
		}
		for _, m := range names {
			if !defined[m[1]] {
				t.Errorf("the Threat model cites %s, which no _test.go file defines", m[1])
			}
		}
	}
	if tables != 1 || rows == 0 {
		t.Errorf("the Threat model holds %d tables (%d rows), want one", tables, rows)
	}
}

// TestReadmeIsShort: the README is what a newcomer reads first (what it
// is, the two commands, a Caddyfile, the directive table and where the
// rest is); the rest lives in docs/.
func TestReadmeIsShort(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(readme), "\n"); n >= 400 {
		t.Errorf("README.md has %d lines, want under 400: move the rest to docs/", n)
	}
}

// TestDocsLinksResolve: every relative link of the project's Markdown (the
// README, docs/, xcaddy.md, the changelog, the bench results) leads to a
// file or folder of the repository, and every #fragment to a heading or an
// <a id> of the page it names.
func TestDocsLinksResolve(t *testing.T) {
	pages := []string{"README.md", "xcaddy.md", "CHANGELOG.md"}
	for _, glob := range []string{"docs/*.md", "bench/results/*.md"} {
		more, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, more...)
	}
	link := regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	checked := 0
	for _, page := range pages {
		src, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(outsideCode(string(src)), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, fragment, _ := strings.Cut(target, "#")
			if path == "" {
				path = page
			} else {
				path = filepath.Join(filepath.Dir(page), path)
			}
			checked++
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s links to %s, which does not exist", page, target)
				continue
			}
			if fragment != "" && !markdownAnchors(t, path)[fragment] {
				t.Errorf("%s links to %s: %s has no heading or anchor %q", page, target, path, fragment)
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d relative links found: is the link pattern right?", checked)
	}
}

// outsideCode returns doc with its fenced code blocks blanked out.
func outsideCode(doc string) string {
	var b strings.Builder
	fenced := false
	for line := range strings.Lines(doc) {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			b.WriteString(line)
		}
	}
	return b.String()
}

// markdownAnchors returns the fragments a Markdown page answers: its
// headings' slugs, as GitHub makes them, and its <a id> anchors.
func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	explicit := regexp.MustCompile(`<a id="([^"]+)"></a>`)
	for line := range strings.Lines(outsideCode(string(src))) {
		for _, m := range explicit.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
		hashes, title, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || hashes == "" || strings.Trim(hashes, "#") != "" {
			continue
		}
		slug := strings.Map(func(r rune) rune {
			switch {
			case r == ' ':
				return '-'
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				return unicode.ToLower(r)
			}
			return -1
		}, strings.TrimSpace(title))
		anchors[slug] = true
	}
	return anchors
}

// TestDocumentedConfigsAreValid: every config the README and docs/ show
// for sse_fanout (a Caddyfile, a site or the directive alone, or the
// handler's JSON) adapts, provisions and validates as Caddy would load it,
// so that a user who copies one gets what the docs say. The syntax
// summary, with its <placeholders>, is not a config.
func TestDocumentedConfigsAreValid(t *testing.T) {
	files, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, file := range append([]string{"README.md"}, files...) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, block := range fencedBlocks(string(b)) {
			name := file + ":" + strconv.Itoa(block.line)
			var cfg []byte
			switch {
			case block.lang == "" && strings.Contains(block.text, "sse_fanout") && !strings.Contains(block.text, "<upstream-base-url>"):
				caddyfile := block.text
				if strings.HasPrefix(caddyfile, "sse_fanout") { // the directive alone: in a site
					caddyfile = "http://127.0.0.1:8080 {\n" + caddyfile + "}\n"
				}
				adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
				if err != nil {
					t.Errorf("%s: the Caddyfile does not adapt: %v", name, err)
					continue
				}
				for _, w := range warnings {
					if !strings.Contains(w.Message, "not formatted") {
						t.Errorf("%s: adapting the Caddyfile warns: %s", name, w.String())
					}
				}
				cfg = adapted
			case block.lang == "json" && strings.Contains(block.text, `"handler": "sse_fanout"`):
				cfg = []byte(`{"apps": {"http": {"servers": {"docs": {"listen": ["127.0.0.1:8080"], "routes": [{"handle": [` + block.text + `]}]}}}}}`)
			default:
				continue
			}
			checked++
			// Nothing binds: Validate provisions and validates only.
			var c caddy.Config
			if err := json.Unmarshal(cfg, &c); err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			c.Admin = &caddy.AdminConfig{Disabled: true}
			// Validate sets Caddy's default logger as the config says: to
			// one that logs nothing, not Caddy's default on stderr, so that
			// the run stays quiet.
			c.Logging = &caddy.Logging{Logs: map[string]*caddy.CustomLog{"default": {
				BaseLog: caddy.BaseLog{WriterRaw: json.RawMessage(`{"output": "discard"}`), Level: "ERROR"},
			}}}
			c.StorageRaw = json.RawMessage(`{"module": "file_system", "root": ` + strconv.Quote(testkit.Storage()) + `}`)
			if err := caddy.Validate(&c); err != nil {
				t.Errorf("%s: the config does not validate: %v", name, err)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked %d configs in the README and docs/, want the 10 or more they show", checked)
	}
}

// TestDocumentedConfigsAreValidatedQuietly runs this test binary again on
// TestDocumentedConfigsAreValid and a test that starts Caddy after it, and
// checks that they print nothing but PASS: validating a config sets
// Caddy's default logger, and one on stderr at INFO would print lines
// that a failing run shows before its failures.
func TestDocumentedConfigsAreValidatedQuietly(t *testing.T) {
	testkit.ExpectQuietRun(t, "^(TestDocumentedConfigsAreValid|TestCursorPrimingOff)$")
}

// fencedBlock is a fenced code block of a Markdown file: its language, its
// text and the line its fence opens on.
type fencedBlock struct {
	lang, text string
	line       int
}

// fencedBlocks returns the fenced code blocks of a Markdown text.
func fencedBlocks(md string) []fencedBlock {
	var blocks []fencedBlock
	var cur *fencedBlock
	for i, line := range strings.Split(md, "\n") {
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &fencedBlock{lang: strings.TrimPrefix(line, "```"), line: i + 1}
		case cur != nil && strings.HasPrefix(line, "```"):
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	return blocks
}
