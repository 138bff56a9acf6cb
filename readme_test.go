package ssefanout

// The README's claims that the tests can check.

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeThreatModelCitesRealTests: the Threat model is one table, each
// of its rows names the tests that hold its rule, and each test it names
// is a func in one of the repository's _test.go files, so that a renamed
// or deleted test cannot leave a rule the README claims is held unheld.
func TestReadmeThreatModelCitesRealTests(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := markdownSection(t, string(readme), "## Threat model")

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

// markdownSection returns the text under heading, up to the next heading
// of the same level or higher.
func markdownSection(t *testing.T, doc, heading string) string {
	t.Helper()
	start := strings.Index(doc, "\n"+heading+"\n")
	if start < 0 {
		t.Fatalf("README.md has no %q", heading)
	}
	body := doc[start+len(heading)+2:]
	level := strings.Repeat("#", strings.Count(strings.Fields(heading)[0], "#"))
	for i := 0; i < len(body); {
		line, _, _ := strings.Cut(body[i:], "\n")
		if strings.HasPrefix(line, "#") {
			if hashes := strings.Fields(line)[0]; len(hashes) <= len(level) && strings.Trim(hashes, "#") == "" {
				return body[:i]
			}
		}
		i += len(line) + 1
	}
	return body
}
