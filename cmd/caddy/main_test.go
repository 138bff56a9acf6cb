package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The test binary doubles as the caddy command: run with
// SSE_FANOUT_RUN_CADDY=1, it is main() with the arguments after "--".
func TestMain(m *testing.M) {
	if os.Getenv("SSE_FANOUT_RUN_CADDY") == "1" {
		for i, arg := range os.Args {
			if arg == "--" {
				os.Args = append([]string{"caddy"}, os.Args[i+1:]...)
				break
			}
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// caddy runs this binary as the caddy command with args.
func caddy(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "SSE_FANOUT_RUN_CADDY=1", "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("caddy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestListModulesHasSSEFanout(t *testing.T) {
	out := caddy(t, "list-modules")
	for _, id := range []string{"http.handlers.sse_fanout", "admin.api.sse_fanout", "http.handlers.reverse_proxy"} {
		if !strings.Contains(out, id) {
			t.Errorf("caddy list-modules does not list %s", id)
		}
	}
}

func TestAdaptExampleCaddyfile(t *testing.T) {
	out := caddy(t, "adapt", "--config", "../../examples/Caddyfile", "--adapter", "caddyfile")
	for _, want := range []string{`"handler":"sse_fanout"`, `"upstream":"http://localhost:9000"`} {
		if !strings.Contains(out, want) {
			t.Errorf("caddy adapt output lacks %s:\n%s", want, out)
		}
	}
}

func TestAdaptRejectsBadCaddyfileWithLine(t *testing.T) {
	bad := t.TempDir() + "/Caddyfile"
	if err := os.WriteFile(bad, []byte(":8080 {\n\tsse_fanout http://localhost:9000 {\n\t\tbuffer -5\n\t}\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "adapt", "--config", bad, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "SSE_FANOUT_RUN_CADDY=1", "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("caddy adapt accepted a negative buffer:\n%s", out)
	}
	if !strings.Contains(string(out), "bad buffer value '-5'") || !strings.Contains(string(out), "Caddyfile:3") {
		t.Fatalf("error does not name the problem and line:\n%s", out)
	}
}
