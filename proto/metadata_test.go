package proto

import (
	"bytes"
	"strings"
	"testing"

	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// reduced is o with only its apiVersion, kind and metadata, by reflection.
func reduced(o *Object) *Object {
	src := o.Resource().ProtoReflect()
	dst := src.New()
	for _, name := range []protoreflect.Name{"api_version", "kind", "metadata"} {
		if fd := src.Descriptor().Fields().ByName(name); fd != nil && src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		}
	}
	return Wrap(dst.Interface().(Resource))
}

// TestAppendMetadata: for every kind, filled field by field, empty, and
// with unknown fields, the reduced encoding is byte for byte what the
// object reduced by reflection marshals to, and appends to dst.
func TestAppendMetadata(t *testing.T) {
	var objs []*Object
	for _, k := range Kinds() {
		for _, f := range []filler{{mapEntries: 3, listLen: 2}, {zero: true, mapEntries: 1, listLen: 1}} {
			r := k.New()
			f.fill(r.ProtoReflect(), 12)
			objs = append(objs, Wrap(r))
		}
		objs = append(objs, Wrap(k.New()), Wrap(withEmptyMessages(k.New())))
	}
	pod := loadPod(t)
	addUnknown(pod.GetPod().GetMetadata().ProtoReflect(), 999)
	addUnknown(pod.GetPod().GetSpec().GetContainers()[0].ProtoReflect(), 77)
	objs = append(objs, pod)

	for _, o := range objs {
		raw, err := o.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		want, err := reduced(o).MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		got, err := AppendMetadata([]byte("prefix"), raw)
		if err != nil {
			t.Fatalf("%s: %v", o.KindName(), err)
		}
		if !bytes.HasPrefix(got, []byte("prefix")) || !bytes.Equal(got[len("prefix"):], want) {
			t.Errorf("%s: AppendMetadata = %x, want prefix + %x", o.KindName(), got, want)
		}
		var back Object
		if err := back.UnmarshalVT(got[len("prefix"):]); err != nil || !gproto.Equal(&back, reduced(o)) {
			t.Errorf("%s: decodes to %v (%v), want %v", o.KindName(), &back, err, reduced(o))
		}
	}
	if got, err := AppendMetadata(nil, nil); err != nil || len(got) != 0 {
		t.Errorf("empty object: %x, %v", got, err)
	}
}

// TestAppendMetadataRejectsGarbage: what is not an encoded Object is an
// error, not a panic or a silently wrong result.
func TestAppendMetadataRejectsGarbage(t *testing.T) {
	cm, _ := Wrap(&ConfigMap{Metadata: &ObjectMeta{Name: "a"}}).MarshalVT()
	for name, raw := range map[string][]byte{
		"truncated":     cm[:len(cm)-1],
		"not a kind":    {0x08, 0x01}, // field 1 as a varint
		"unknown field": append([]byte{0xa2, 0x06, 0x00}, cm...),
		"two kinds":     append(append([]byte(nil), cm...), cm...),
		"bad resource":  {0x32, 0x02, 0xff, 0xff},
	} {
		if _, err := AppendMetadata(nil, raw); err == nil || !strings.HasPrefix(err.Error(), "object: ") {
			t.Errorf("%s: err = %v, want an object: error", name, err)
		}
	}
}
