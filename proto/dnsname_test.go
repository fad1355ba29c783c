package proto

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/validate/content"
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
	eachString("a9-.Z_", 6, check)
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

// eachString calls fn with every string of up to n characters of alphabet.
func eachString(alphabet string, n int, fn func(string)) {
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		fn(prefix)
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			gen(prefix+string(c), n-1)
		}
	}
	gen("", n)
}

func BenchmarkDNSSubdomain(b *testing.B) {
	for b.Loop() {
		if len(isDNS1123Subdomain("web-7d4b9c8f6-x2x9q.188e3a0b4c2d1f00")) != 0 {
			b.Fatal("refused")
		}
	}
}

// The label and configuration key loops likewise accept exactly what
// apimachinery accepts: every string of up to 5 characters over an
// alphabet with each kind of character (a slash and a dot included), and
// strings around the length limits.
func TestLabelsAndKeysAsApimachinery(t *testing.T) {
	check := func(v string) {
		t.Helper()
		if got, want := len(isLabelKey(v)) == 0, len(content.IsLabelKey(v)) == 0; got != want {
			t.Errorf("label key %q: valid = %v, apimachinery says %v", v, got, want)
		}
		if got, want := len(isLabelValue(v)) == 0, len(content.IsLabelValue(v)) == 0; got != want {
			t.Errorf("label value %q: valid = %v, apimachinery says %v", v, got, want)
		}
		if got, want := len(isConfigMapKey(v)) == 0, len(validation.IsConfigMapKey(v)) == 0; got != want {
			t.Errorf("config key %q: valid = %v, apimachinery says %v", v, got, want)
		}
	}
	eachString("a9-._/Z", 5, check)
	name63, sub253 := strings.Repeat("a", 63), strings.Repeat("a", 253)
	for _, v := range []string{
		name63, name63 + "a", "x/" + name63, "x/" + name63 + "b", sub253 + "/a", sub253 + "a/a", sub253, sub253 + "a",
		"example.com/MyName", "Example.com/a", "a/b/c", "/a", "a/", "app.kubernetes.io/name", "my_value", "-a", "a-",
		"..a", ".a", "...", "a..", "é", "a\x00b", "a b", "KEY_NAME", "key.name",
	} {
		check(v)
	}
}

// The port name loop accepts exactly what apimachinery's IsValidPortName
// accepts: every string of up to 6 characters over an alphabet with each
// kind of character, and strings around the length limit.
func TestPortNamesAsApimachinery(t *testing.T) {
	check := func(v string) {
		t.Helper()
		if got, want := len(isPortName(v)) == 0, len(validation.IsValidPortName(v)) == 0; got != want {
			t.Errorf("port name %q: valid = %v, apimachinery says %v", v, got, want)
		}
	}
	eachString("a9-Z.", 6, check)
	for _, v := range []string{
		"http", "metrics-2", strings.Repeat("a", 15), strings.Repeat("a", 16), "123456789012345", "a--b", "-a", "a-",
		"é", "a\x00b", "a b", "HTTP",
	} {
		check(v)
	}
}

func BenchmarkLabels(b *testing.B) {
	ls := map[string]string{"app.kubernetes.io/name": "web", "pod-template-hash": "7d4b9c8f6"}
	for b.Loop() {
		if len(validateLabels(ls, nil)) != 0 {
			b.Fatal("refused")
		}
	}
}
