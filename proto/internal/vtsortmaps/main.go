// Command vtsortmaps makes vtprotobuf's generated marshalling deterministic:
// it rewrites every map loop of the MarshalVT code in the files given to
// range over the map's keys in descending order (proto.descendingKeys)
// rather than in Go's random map order. vtprotobuf v0.6.0 has no such
// option (planetscale/vtprotobuf#82). It runs as part of make proto and
// changes nothing in a file it already rewrote.
//
//	go run ./proto/internal/vtsortmaps proto/*_vtproto.pb.go
package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
)

// mapLoop is the loop vtprotobuf v0.6.0 writes for a map field in
// MarshalToSizedBufferVT: `for k := range m.Field {`, followed by
// `v := m.Field[k]`. Its size and clone code range over key and value, so
// they do not match.
var mapLoop = regexp.MustCompile(`(?m)^(\s*)for k := range (m\.\w+) \{\n(\s*)v := (m\.\w+)\[k\]$`)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vtsortmaps FILE_vtproto.pb.go...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		if err := rewrite(path); err != nil {
			fmt.Fprintln(os.Stderr, "vtsortmaps:", err)
			os.Exit(1)
		}
	}
}

func rewrite(path string) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var bad error
	out := mapLoop.ReplaceAllFunc(src, func(loop []byte) []byte {
		m := mapLoop.FindSubmatch(loop)
		if !bytes.Equal(m[2], m[4]) {
			bad = fmt.Errorf("%s: map loop over %s reads %s: not the generated pattern", path, m[2], m[4])
			return loop
		}
		return fmt.Appendf(nil, "%sfor k := range descendingKeys(%s) {\n%sv := %s[k]", m[1], m[2], m[3], m[4])
	})
	if bad != nil {
		return bad
	}
	if bytes.Equal(out, src) {
		return nil
	}
	return os.WriteFile(path, out, 0o644)
}
