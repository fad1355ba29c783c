package proto

import (
	"strings"
	"testing"
)

// LookupKind answers as a scan of the table in order would: by a kind's
// name, singular, plural or short name, in any case; the first kind wins.
func TestLookupKind(t *testing.T) {
	scan := func(name string) (string, bool) {
		n := strings.ToLower(name)
		for _, k := range kindTable {
			if n == strings.ToLower(k.Kind) || n == k.Plural {
				return k.Kind, true
			}
			for _, s := range k.Short {
				if n == s {
					return k.Kind, true
				}
			}
		}
		return "", false
	}
	names := []string{"", "x", "Podx", "pod s", "Pods", "PODS", "svc", "SVC", "Deploy", "ev", "events"}
	for _, k := range kindTable {
		names = append(names, k.Kind, strings.ToLower(k.Kind), strings.ToUpper(k.Kind), k.Plural, strings.ToUpper(k.Plural))
		names = append(names, k.Short...)
	}
	for _, name := range names {
		want, wantOK := scan(name)
		got, ok := LookupKind(name)
		if ok != wantOK || got.Kind != want {
			t.Errorf("LookupKind(%q) = %q, %v; want %q, %v", name, got.Kind, ok, want, wantOK)
		}
	}
	if k, ok := LookupKind("po"); !ok || k.Kind != "Pod" || k.Plural != "pods" {
		t.Errorf(`LookupKind("po") = %+v, %v`, k, ok)
	}
}

func BenchmarkLookupKind(b *testing.B) {
	for b.Loop() {
		if _, ok := LookupKind("ConfigMap"); !ok {
			b.Fatal("not found")
		}
	}
}
