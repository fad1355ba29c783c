package proto

import (
	"errors"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"
)

// benchObjects returns the write path's payloads: the benchmark suite's
// 256-byte ConfigMap (issue 8) and the realistic pod of testdata/pod.yaml.
func benchObjects(b *testing.B) []struct {
	name string
	obj  *Object
} {
	b.Helper()
	cm := &ConfigMap{
		Metadata: &ObjectMeta{Name: "cm-000042", Namespace: "default"},
		Data:     map[string]string{"v": ""},
	}
	obj := Wrap(cm)
	// Pad the value until the Object encodes to 256 bytes, as the suite's
	// objects.ConfigMap does; the length prefixes grow with it.
	n := 256 - gproto.Size(obj)
	for {
		cm.Data["v"] = strings.Repeat("x", n)
		over := gproto.Size(obj) - 256
		if over <= 0 {
			break
		}
		n -= over
	}
	if n := gproto.Size(obj); n != 256 {
		b.Fatalf("ConfigMap is %d bytes, want 256", n)
	}
	data, err := os.ReadFile("testdata/pod.yaml")
	if err != nil {
		b.Fatal(err)
	}
	pod, err := DecodeObject(data)
	if err != nil {
		b.Fatal(err)
	}
	return []struct {
		name string
		obj  *Object
	}{{"ConfigMap256", obj}, {"Pod", pod}}
}

// The gRPC benchmarks go through benchCodec, the codec the server and the
// client use for skiff's messages.

func BenchmarkObjectClone(b *testing.B) {
	for _, tc := range benchObjects(b) {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if tc.obj.Clone() == nil {
					b.Fatal("nil clone")
				}
			}
		})
	}
}

func BenchmarkObjectSize(b *testing.B) {
	for _, tc := range benchObjects(b) {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := ValidateWithLimit(tc.obj, MaxObjectBytes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkGRPCMarshal(b *testing.B) {
	codec := benchCodec()
	for _, tc := range benchObjects(b) {
		req := &WriteRequest{Object: tc.obj}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out, err := codec.Marshal(req)
				if err != nil {
					b.Fatal(err)
				}
				out.Free()
			}
		})
	}
}

func BenchmarkGRPCUnmarshal(b *testing.B) {
	codec := benchCodec()
	for _, tc := range benchObjects(b) {
		data, err := gproto.Marshal(&WriteRequest{Object: tc.obj})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				req := &WriteRequest{}
				if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUnmarshalPaths splits Unmarshal's cost: the standard library,
// the generated UnmarshalVT alone, the check of what UnmarshalVT leaves
// out, and Unmarshal (check, then UnmarshalVT).
func BenchmarkUnmarshalPaths(b *testing.B) {
	for _, tc := range benchObjects(b) {
		data, err := gproto.Marshal(&WriteRequest{Object: tc.obj})
		if err != nil {
			b.Fatal(err)
		}
		rules := wireRulesFor((&WriteRequest{}).ProtoReflect().Descriptor())
		for _, p := range []struct {
			name string
			f    func() error
		}{
			{"std", func() error { return gproto.Unmarshal(data, &WriteRequest{}) }},
			{"vt", func() error { return (&WriteRequest{}).UnmarshalVT(data) }},
			{"check", func() error {
				if !rules.valid(data, protowire.DefaultRecursionLimit) {
					return errors.New("invalid")
				}
				return nil
			}},
			{"Unmarshal", func() error { return Unmarshal(data, &WriteRequest{}) }},
		} {
			b.Run(tc.name+"/"+p.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					if err := p.f(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
