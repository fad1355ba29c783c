package cli

import (
	"bytes"
	"strings"
	"testing"
)

func runAPIResources(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := newAPIResourcesCommand(&Options{Out: &out, ErrOut: &out})
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestAPIResources(t *testing.T) {
	out, err := runAPIResources(t)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if f := strings.Fields(lines[0]); strings.Join(f, " ") != "NAME SHORTNAMES APIVERSION NAMESPACED KIND" {
		t.Fatalf("header %q", lines[0])
	}
	seen := map[string]bool{}
	lastGroup := ""
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		name, kind := f[0], f[len(f)-1]
		seen[kind] = true
		// Every name and short name printed is one the other commands take.
		names := []string{name}
		if len(f) == 5 {
			names = append(names, strings.Split(f[1], ",")...)
		}
		for _, n := range names {
			info, err := lookupKind(n)
			if err != nil || info.Kind != kind {
				t.Errorf("%q (row %q) resolves to %v, %v", n, line, info.Kind, err)
			}
		}
		// The core group first, then by group.
		group := apiGroup(f[len(f)-3])
		if group < lastGroup {
			t.Errorf("row %q: group %q after %q", line, group, lastGroup)
		}
		lastGroup = group
	}
	for _, k := range []string{"Pod", "Deployment", "Node", "Event", "Lease"} {
		if !seen[k] {
			t.Errorf("%s missing:\n%s", k, out)
		}
	}
	if !regexpRow(out, "pods", "po", "v1", "true", "Pod") {
		t.Errorf("no pods row:\n%s", out)
	}

	out, err = runAPIResources(t, "--namespaced=false", "--no-headers")
	if err != nil || strings.Contains(out, "true") || !regexpRow(out, "nodes", "no", "v1", "false", "Node") || strings.Contains(out, "NAME") {
		t.Errorf("--namespaced=false --no-headers: %v\n%s", err, out)
	}
	out, err = runAPIResources(t, "-o", "name")
	if err != nil || !strings.Contains(out, "pods\n") || !strings.Contains(out, "deployments.apps\n") {
		t.Errorf("-o name: %v\n%s", err, out)
	}
	if _, err := runAPIResources(t, "--namespaced=maybe"); err == nil || !strings.Contains(err.Error(), "use true or false") {
		t.Errorf("--namespaced=maybe: %v", err)
	}
}

// regexpRow reports whether out has a line of exactly these fields.
func regexpRow(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(line), " ") == strings.Join(fields, " ") {
			return true
		}
	}
	return false
}
