package proto

import (
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The generated vtprotobuf code (SizeVT, MarshalVT, UnmarshalVT, CloneVT)
// must agree with the standard library on every message skiff stores or
// sends: these tests compare the two on the examples, on every kind filled
// field by field, and on the edge cases (unknown fields, oneofs, zero and
// empty values, timestamps).

// vtCase is one message to compare.
type vtCase struct {
	name string
	msg  vtMessage
}

func vtCases(t *testing.T) []vtCase {
	t.Helper()
	var cases []vtCase
	// Every example manifest, as users write them, and every test one.
	examples := manifestObjects(t, "../examples/*.yaml")
	if len(examples) == 0 {
		t.Fatal("no manifests in ../examples")
	}
	maps.Copy(examples, testdataObjects(t))
	for f, objs := range examples {
		for i, o := range objs {
			cases = append(cases, vtCase{name: fmt.Sprintf("%s#%d", f, i), msg: o})
		}
	}
	// Every kind with every field set, through all nesting levels, with
	// three and with one map entry, and with zero values in every field
	// that has presence.
	for _, k := range Kinds() {
		for _, v := range []struct {
			name string
			f    filler
		}{
			{"full", filler{mapEntries: 3, listLen: 2}},
			{"one-map-entry", filler{mapEntries: 1, listLen: 2}},
			{"zero", filler{zero: true, mapEntries: 1, listLen: 1}},
		} {
			r := k.New()
			v.f.fill(r.ProtoReflect(), 12)
			o := Wrap(r)
			cases = append(cases, vtCase{name: k.Kind + "/" + v.name, msg: o})
			cases = append(cases, vtCase{name: k.Kind + "/" + v.name + "/command",
				msg: &Command{Time: &timestamppb.Timestamp{Seconds: 1767225600, Nanos: 5}, Uid: "u", Op: &Command_Create{Create: o}}})
		}
		// An empty object of the kind, and one with empty messages set:
		// set-but-empty is present on the wire, nil is not.
		cases = append(cases,
			vtCase{name: k.Kind + "/empty", msg: Wrap(k.New())},
			vtCase{name: k.Kind + "/empty-meta", msg: Wrap(withEmptyMessages(k.New()))})
	}
	// Unknown fields at the top, in metadata and deep inside a pod (a newer
	// master's fields, kept by an older one).
	pod := loadPod(t)
	addUnknown(pod.ProtoReflect(), 1000)
	addUnknown(pod.GetPod().GetMetadata().ProtoReflect(), 999)
	addUnknown(pod.GetPod().GetSpec().GetContainers()[0].ProtoReflect(), 77)
	cases = append(cases, vtCase{name: "unknown-fields", msg: pod},
		vtCase{name: "unknown-fields/command", msg: &Command{Op: &Command_Update{Update: pod}}})
	// Every operation of the raft command, including empty ones.
	for _, op := range []isCommand_Op{
		&Command_Create{Create: &Object{}},
		&Command_Update{Update: Wrap(&ConfigMap{})},
		&Command_UpdateStatus{UpdateStatus: Wrap(&Pod{Status: &PodStatus{}})},
		&Command_Apply{Apply: Wrap(&Namespace{Metadata: &ObjectMeta{Name: "n"}})},
		&Command_Delete{Delete: &DeleteOp{Kind: "Pod", GracePeriodSeconds: gproto.Int64(0)}},
		&Command_Delete{Delete: &DeleteOp{}},
		&Command_Bind{Bind: &BindOp{Name: "p", NodeName: "n", ResourceVersion: math.MaxUint64}},
		&Command_Batch{Batch: &CommandBatch{Commands: []*Command{{}, {Op: &Command_Bind{Bind: &BindOp{}}}}}},
		&Command_Batch{Batch: &CommandBatch{}},
		nil,
	} {
		cases = append(cases, vtCase{name: fmt.Sprintf("command/%T", op), msg: &Command{Op: op}})
	}
	// Timestamps: unset, set to the zero time, before 1970, the limits.
	for i, ts := range []*timestamppb.Timestamp{nil, {}, {Seconds: -1, Nanos: 999999999},
		{Seconds: minTimestamp}, {Seconds: maxTimestamp, Nanos: 999999999}} {
		cases = append(cases, vtCase{name: fmt.Sprintf("timestamp/%d", i), msg: &Command{Time: ts, Uid: "u"}})
	}
	// Oneofs of scalars are present even when zero.
	for i, m := range []vtMessage{
		&ExecRequest{Msg: &ExecRequest_Stdin{}},
		&ExecRequest{Msg: &ExecRequest_Stdin{Stdin: []byte("ls\n")}},
		&ExecRequest{Msg: &ExecRequest_StdinEof{}},
		&ExecRequest{Msg: &ExecRequest_Resize{Resize: &TerminalSize{}}},
		&ExecRequest{Msg: &ExecRequest_Start{Start: &ExecStart{Command: []string{"sh"}, Size: &TerminalSize{Width: 80}}}},
		&ExecResponse{Msg: &ExecResponse_ExitCode{}},
		&ExecResponse{Msg: &ExecResponse_ExitCode{ExitCode: -1}},
		&ExecResponse{Msg: &ExecResponse_Stdout{Stdout: []byte{}}},
		&ExecRequest{},
	} {
		cases = append(cases, vtCase{name: fmt.Sprintf("oneof/%d/%T", i, m), msg: m})
	}
	return cases
}

func TestVTAgreesWithStandard(t *testing.T) {
	det := gproto.MarshalOptions{Deterministic: true}
	for _, tc := range vtCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.msg
			want, err := det.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.SizeVT(); got != gproto.Size(m) {
				t.Errorf("SizeVT %d, proto.Size %d", got, gproto.Size(m))
			}

			vtBytes, err := Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if len(vtBytes) != len(want) {
				t.Errorf("MarshalVT wrote %d bytes, the standard library %d", len(vtBytes), len(want))
			}
			// Maps too: their loops range over descendingKeys.
			if string(vtBytes) != string(want) {
				t.Errorf("MarshalVT bytes differ from deterministic proto.Marshal:\n vt  %x\n std %x", vtBytes, want)
			}
			back := m.ProtoReflect().New().Interface()
			if err := gproto.Unmarshal(vtBytes, back); err != nil || !gproto.Equal(back, m) {
				t.Errorf("MarshalVT's bytes decoded by the standard library: equal %v, err %v", gproto.Equal(back, m), err)
			}

			// The standard library's bytes, decoded by the generated code.
			vt := m.ProtoReflect().New().Interface().(vtMessage)
			if err := vt.UnmarshalVT(want); err != nil || !gproto.Equal(vt, m) {
				t.Errorf("UnmarshalVT of proto.Marshal's bytes: equal %v, err %v", gproto.Equal(vt, m), err)
			}
			std := m.ProtoReflect().New().Interface()
			if err := gproto.Unmarshal(want, std); err != nil {
				t.Fatal(err)
			}
			if !gproto.Equal(vt, std) {
				t.Error("UnmarshalVT and proto.Unmarshal decode the same bytes differently")
			}
			// Both decoders keep unknown fields byte for byte.
			if got, want := string(vt.ProtoReflect().GetUnknown()), string(std.ProtoReflect().GetUnknown()); got != want {
				t.Errorf("unknown fields: vt %x, std %x", got, want)
			}

			testCloneVT(t, m, want)
		})
	}
}

// testCloneVT checks that CloneVT copies m completely and deeply: equal to
// m and to gproto.Clone's copy, and changing the copy leaves m as it was
// (encoded as enc).
func testCloneVT(t *testing.T, m vtMessage, enc []byte) {
	t.Helper()
	c, ok := m.(interface{ CloneMessageVT() gproto.Message })
	if !ok {
		t.Fatalf("%T has no CloneMessageVT", m)
	}
	clone := c.CloneMessageVT()
	if !gproto.Equal(clone, m) || !gproto.Equal(clone, gproto.Clone(m)) {
		t.Fatal("CloneVT differs from the original or from proto.Clone")
	}
	if o, ok := m.(*Object); ok && !gproto.Equal(o.Clone(), m) {
		t.Fatal("Object.Clone differs from the original")
	}
	scribble(clone.ProtoReflect())
	after, err := gproto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(enc) {
		t.Fatal("changing the clone changed the original: CloneVT shares memory")
	}
}

// scribble changes every populated field of m, recursively, in place:
// strings, bytes (in their backing arrays), map entries and list elements.
func scribble(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			mp := v.Map()
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				mp.Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
					scribble(v.Message())
					return true
				})
			}
			mp.Set(protoreflect.ValueOfString("scribbled").MapKey(), scalarOf(fd.MapValue(), 7, false))
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if fd.Kind() == protoreflect.MessageKind {
					scribble(l.Get(i).Message())
				} else if fd.Kind() == protoreflect.BytesKind {
					scribbleBytes(l.Get(i).Bytes())
				}
			}
			if fd.Kind() != protoreflect.MessageKind {
				l.Append(scalarOf(fd, 7, false))
			}
		case fd.Kind() == protoreflect.MessageKind:
			scribble(v.Message())
		case fd.Kind() == protoreflect.BytesKind:
			scribbleBytes(v.Bytes())
		default:
			m.Set(fd, scalarOf(fd, 7, false))
		}
		return true
	})
	if u := m.GetUnknown(); len(u) > 0 {
		scribbleBytes(u)
	}
}

func scribbleBytes(b []byte) {
	for i := range b {
		b[i] ^= 0xff
	}
}

// filler sets every field of a message: scalars to values that vary (and
// include negative numbers and non-ASCII strings), maps to mapEntries
// entries, lists to listLen elements, messages recursively; the first
// field of each oneof. With zero, scalars and enums get their zero values,
// which only fields with presence (optional, oneof) put on the wire.
type filler struct {
	zero       bool
	mapEntries int
	listLen    int
	n          int
}

func (f *filler) fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && od.Fields().Get(0) != fd {
			continue
		}
		f.n++
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for j := range f.mapEntries {
				var v protoreflect.Value
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					v = mp.NewValue()
					if depth > 0 {
						f.fill(v.Message(), depth-1)
					}
				} else {
					v = scalarOf(fd.MapValue(), f.n+j, f.zero)
				}
				mp.Set(scalarOf(fd.MapKey(), f.n+j, false).MapKey(), v)
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for j := range f.listLen {
				if fd.Kind() == protoreflect.MessageKind {
					v := l.NewElement()
					if depth > 0 {
						f.fill(v.Message(), depth-1)
					}
					l.Append(v)
				} else {
					l.Append(scalarOf(fd, f.n+j, f.zero))
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			mm := m.Mutable(fd).Message()
			if depth > 0 {
				f.fill(mm, depth-1)
			}
		default:
			m.Set(fd, scalarOf(fd, f.n, f.zero))
		}
	}
}

// scalarOf returns a value for a scalar field that depends on n.
func scalarOf(fd protoreflect.FieldDescriptor, n int, zero bool) protoreflect.Value {
	if zero {
		if fd.Kind() == protoreflect.BytesKind {
			return protoreflect.ValueOfBytes([]byte{})
		}
		return zeroScalar(fd)
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n%3 + 1))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(n*1000003) * int32(1-2*(n%2)))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if fd.ContainingMessage().FullName() == "google.protobuf.Timestamp" {
			return protoreflect.ValueOfInt64(int64(n) * 86400)
		}
		return protoreflect.ValueOfInt64(int64(n) * 1e12 * int64(1-2*(n%2)))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(n) * 4000037)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(math.MaxUint64 - uint64(n))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(n) / 3)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(n) / 7)
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(fmt.Sprintf("\x00\xff%d", n)))
	}
	return protoreflect.ValueOfString(fmt.Sprintf("%s-%d-ü✓", fd.Name(), n))
}

// withEmptyMessages sets every message field of r (metadata, spec,
// status) to an empty message.
func withEmptyMessages(r Resource) Resource {
	m := r.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			m.Mutable(fd)
		}
	}
	return r
}

// addUnknown appends unknown fields of every wire type to m.
func addUnknown(m protoreflect.Message, num protowire.Number) {
	b := m.GetUnknown()
	b = protowire.AppendTag(b, num, protowire.VarintType)
	b = protowire.AppendVarint(b, 1<<40)
	b = protowire.AppendTag(b, num+1, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("a newer master's field"))
	b = protowire.AppendTag(b, num+2, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 7)
	b = protowire.AppendTag(b, num+3, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 9)
	b = protowire.AppendTag(b, num+4, protowire.StartGroupType)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 3)
	b = protowire.AppendTag(b, num+4, protowire.EndGroupType)
	m.SetUnknown(b)
}

func loadPod(t testing.TB) *Object {
	t.Helper()
	data, err := os.ReadFile("testdata/pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	o, err := DecodeObject(data)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestVTFillerCoversEveryField guards the test above: the filler must reach
// every field of every kind, or a generated field path would go unchecked.
func TestVTFillerCoversEveryField(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			seen[fd.FullName()] = true
			switch {
			case fd.IsMap():
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					v.Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool { walk(v.Message()); return true })
				}
			case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
				for i := range v.List().Len() {
					walk(v.List().Get(i).Message())
				}
			case fd.Kind() == protoreflect.MessageKind:
				walk(v.Message())
			}
			return true
		})
	}
	want := map[protoreflect.FullName]bool{}
	var all func(md protoreflect.MessageDescriptor)
	all = func(md protoreflect.MessageDescriptor) {
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			if want[fd.FullName()] {
				continue
			}
			want[fd.FullName()] = true
			switch {
			case fd.IsMap(): // the entry's key and value are not fields of their own
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					all(fd.MapValue().Message())
				}
			case fd.Kind() == protoreflect.MessageKind:
				all(fd.Message())
			}
		}
	}
	for _, k := range Kinds() {
		r := k.New()
		(&filler{mapEntries: 1, listLen: 1}).fill(r.ProtoReflect(), 12)
		walk(r.ProtoReflect())
		all(r.ProtoReflect().Descriptor())
	}
	var missing []string
	for name := range want {
		if !seen[name] {
			missing = append(missing, string(name))
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Fatalf("the filler leaves %d fields unset: %v", len(missing), missing)
	}
}
