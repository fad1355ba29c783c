package objects

import (
	"testing"

	gproto "google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
)

func TestConfigMapSize(t *testing.T) {
	for _, name := range []string{"a", "w12-3-45678", "a-name-of-sixty-three-characters-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"} {
		for _, size := range []int{200, PayloadBytes, 300} {
			if got := gproto.Size(ConfigMap("default", name, size)); got != size {
				t.Errorf("ConfigMap(%q, %d) is %d bytes", name, size, got)
			}
		}
	}
}

func TestTemplatesValidate(t *testing.T) {
	p, err := Pod("ns", "pod-1", "node-1", "app-1")
	if err != nil {
		t.Fatal(err)
	}
	n, err := Node("node-1", "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []*pb.Object{p, n, ConfigMap("default", "cm", PayloadBytes)} {
		pb.SetDefaults(o)
		if err := pb.Validate(o); err != nil {
			t.Errorf("%s: %v", o.KindName(), err)
		}
	}
	if s := gproto.Size(p); s < 800 {
		t.Errorf("pod is %d bytes, want a realistic size (about 1 KB)", s)
	}
}
