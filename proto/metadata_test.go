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

// TestSizeWithStatus: for every kind, the size SizeWithStatus computes from
// the stored encoding is what the stored object with the new status (or
// none), defaulted, measures decoded, whatever the sizes of the old and new
// status (length prefixes of one byte or more); kinds without status are
// not ok.
func TestSizeWithStatus(t *testing.T) {
	pod := loadPod(t)
	addUnknown(pod.GetPod().GetMetadata().ProtoReflect(), 999)
	for _, k := range Kinds() {
		var objs []*Object
		for _, f := range []filler{{mapEntries: 3, listLen: 2}, {zero: true, mapEntries: 1, listLen: 1}, {mapEntries: 20, listLen: 9}} {
			r := k.New()
			f.fill(r.ProtoReflect(), 12)
			objs = append(objs, Wrap(r))
		}
		objs = append(objs, Wrap(k.New()), Wrap(withEmptyMessages(k.New())))
		if k.Kind == "Pod" {
			objs = append(objs, pod)
		}
		for _, o := range objs {
			SetDefaults(o)
		}
		fd := k.New().ProtoReflect().Descriptor().Fields().ByName("status")
		for _, stored := range objs {
			raw, err := stored.MarshalVT()
			if err != nil {
				t.Fatal(err)
			}
			for _, upd := range objs {
				merged := stored.Clone()
				dst, src := merged.Resource().ProtoReflect(), upd.Resource().ProtoReflect()
				statusSize := -1
				if fd != nil {
					if src.Has(fd) {
						dst.Set(fd, src.Get(fd))
						statusSize = gproto.Size(src.Get(fd).Message().Interface())
					} else {
						dst.Clear(fd)
					}
				}
				SetDefaults(merged)
				got, ok, err := SizeWithStatus(raw, statusSize)
				switch {
				case err != nil:
					t.Fatalf("%s: %v", k.Kind, err)
				case ok != (fd != nil):
					t.Fatalf("%s: ok = %v with a status field %v", k.Kind, ok, fd != nil)
				case ok && got != merged.SizeVT():
					t.Fatalf("%s: size %d, want %d (stored %d bytes, new status %d)", k.Kind, got, merged.SizeVT(), len(raw), statusSize)
				}
			}
		}
	}
	if _, _, err := SizeWithStatus([]byte{0x08, 0x01}, 3); err == nil || !strings.HasPrefix(err.Error(), "object: ") {
		t.Errorf("not an object: err = %v", err)
	}
}

// BenchmarkStatusUpdateSize: what a master does to check a pod's status
// update against the size limit, decoding the stored pod (as until the
// twentieth session) or reading its encoding (SizeWithStatus).
func BenchmarkStatusUpdateSize(b *testing.B) {
	pod := loadPod(b)
	SetDefaults(pod)
	raw, err := pod.MarshalVT()
	if err != nil {
		b.Fatal(err)
	}
	st := &PodStatus{Phase: "Running", PodIp: "10.244.1.7", Conditions: []*PodCondition{{Type: "Ready", Status: "True"}}}
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var o Object
			if err := o.UnmarshalVT(raw); err != nil {
				b.Fatal(err)
			}
			o.GetPod().Status = st.CloneVT()
			_ = o.SizeVT()
		}
	})
	b.Run("encoded", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := SizeWithStatus(raw, gproto.Size(st)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
