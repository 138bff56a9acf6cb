package ssefanout

// The README and docs/: what the tests can check of them.

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
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
