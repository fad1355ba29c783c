package cli

import (
	"bytes"
	"strings"
	"testing"
)

// Shell completion: the script for each shell, and kinds offered after get
// (cobra's __complete entry point is what the scripts call).
func TestCompletion(t *testing.T) {
	run := func(args ...string) string {
		t.Helper()
		root := NewRootCommand("test")
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	for shell, want := range map[string]string{"bash": "__start_skiff", "zsh": "#compdef skiff", "fish": "complete -c skiff", "powershell": "Register-ArgumentCompleter"} {
		if out := run("completion", shell); !strings.Contains(out, want) {
			t.Errorf("skiff completion %s: no %q in the script", shell, want)
		}
	}
	out := run("__complete", "get", "")
	for _, kind := range []string{"pods", "deployments", "services", "nodes"} {
		if !strings.Contains(out, kind+"\n") {
			t.Errorf("completion after get offers no %s:\n%s", kind, out)
		}
	}
	out = run("__complete", "get", "dep")
	if !strings.Contains(out, "deployments") || strings.Contains(out, "pods\n") {
		t.Errorf("completion of get dep:\n%s", out)
	}
}
