package proto

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// The loops accept exactly the names apimachinery's regexps and length
// limits accept: every string of up to 6 characters over an alphabet with
// each kind of character, and strings around the length limits.
func TestDNSNamesAsApimachinery(t *testing.T) {
	check := func(v string) {
		t.Helper()
		if got, want := len(isDNS1123Subdomain(v)) == 0, len(validation.IsDNS1123Subdomain(v)) == 0; got != want {
			t.Errorf("subdomain %q: valid = %v, apimachinery says %v", v, got, want)
		}
		if got, want := len(isDNS1123Label(v)) == 0, len(validation.IsDNS1123Label(v)) == 0; got != want {
			t.Errorf("label %q: valid = %v, apimachinery says %v", v, got, want)
		}
	}
	const alphabet = "a9-.Z_"
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		check(prefix)
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			gen(prefix+string(c), n-1)
		}
	}
	gen("", 6)
	label63 := strings.Repeat("a", 63)
	for _, v := range []string{
		label63, label63 + "a", strings.Repeat("a", 62) + "-", "a" + strings.Repeat("-", 61) + "a",
		strings.Repeat("a", 253), strings.Repeat("a", 254), strings.Repeat(label63+".", 3) + strings.Repeat("b", 61),
		strings.Repeat(label63+".", 3) + strings.Repeat("b", 62), strings.Repeat("ab.", 84) + "a", "a..b", ".a", "a.",
		"pod-00001.188e3a0b4c2d1f00", "kube-system", "x.y-z.0", "é", "a\x00b", "a b",
	} {
		check(v)
	}
}

func BenchmarkDNSSubdomain(b *testing.B) {
	for b.Loop() {
		if len(isDNS1123Subdomain("web-7d4b9c8f6-x2x9q.188e3a0b4c2d1f00")) != 0 {
			b.Fatal("refused")
		}
	}
}
