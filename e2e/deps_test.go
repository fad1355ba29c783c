package e2e

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// allowedImports is design.md's table of which skiff packages may import
// which (sub-packages follow their top-level package).
var allowedImports = map[string][]string{
	"proto":       {},
	"pki":         {},
	"fsm":         {"proto"},
	"controllers": {"proto"},
	"client":      {"proto", "pki"},
	"server":      {"proto", "fsm", "controllers", "pki"},
	"worker":      {"proto", "client", "pki"},
	"netproxy":    {"proto", "client", "pki"},
	"cli":         {"proto", "client", "pki"},
	// Examples show what users outside this repository can build: only
	// the libraries (client, controllers, proto), never server or cli.
	"examples": {"proto", "client", "controllers", "pki"},
}

const module = "github.com/skiff-sh/skiff/"

func topLevel(pkg string) string {
	top, _, _ := strings.Cut(strings.TrimPrefix(pkg, module), "/")
	return top
}

// TestPackageDependencies keeps the import rules of design.md true.
func TestPackageDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		from := topLevel(p.ImportPath)
		allowed, ruled := allowedImports[from]
		if !ruled {
			continue // cmd/ and e2e may import anything
		}
		checked++
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			to := topLevel(imp)
			if to == from {
				continue
			}
			ok := false
			for _, a := range allowed {
				ok = ok || a == to
			}
			if !ok {
				t.Errorf("%s imports %s: design.md allows %s to import only %v", p.ImportPath, imp, from, allowed)
			}
		}
	}
	if checked == 0 {
		t.Fatal("go list returned no ruled packages")
	}
}

// TestShimBinaryStaysSmall: skiff-shim exists to start fast (a container
// start runs it twice), so it links package shim and libcontainer, not the
// rest of skiff, gRPC or protobuf, whose package initialisation is most of
// what the skiff binary spends before main.
func TestShimBinaryStaysSmall(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../cmd/skiff-shim").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps ../cmd/skiff-shim: only %q", deps)
	}
	for _, d := range deps {
		switch {
		case d == module+"cmd/skiff-shim", d == module+"worker/runtime/shim":
		case strings.HasPrefix(d, module), strings.HasPrefix(d, "google.golang.org/grpc"),
			strings.HasPrefix(d, "google.golang.org/protobuf"), strings.HasPrefix(d, "k8s.io/"):
			t.Errorf("skiff-shim links %s: keep package shim free of it (see cmd/skiff-shim)", d)
		}
	}
}
