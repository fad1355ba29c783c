package proto

import (
	"fmt"
	"slices"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The *_vtproto.pb.go files (protoc-gen-go-vtproto, `make proto`) give every
// message reflection-free SizeVT, MarshalVT, UnmarshalVT and CloneVT. They
// are what the masters' write path uses; this file adapts them to gRPC and
// makes their decoding exactly the standard library's.

// vtMessage is the generated code of one skiff message.
type vtMessage interface {
	gproto.Message
	SizeVT() int
	MarshalToSizedBufferVT(b []byte) (int, error)
	UnmarshalVT(b []byte) error
}

// Unmarshal decodes b into m, replacing its contents, exactly as
// gproto.Unmarshal does: it accepts the same inputs, returns an error for
// the same inputs, and the message it fills is gproto.Equal to the
// standard library's. For skiff's messages it decodes with the generated
// UnmarshalVT, which is several times faster; other messages go to
// gproto.Unmarshal.
//
// UnmarshalVT alone is more lenient than the standard library: it takes
// strings that are not UTF-8, over-long varints, field numbers above 2^29-1
// and unbalanced groups in unknown fields, it keeps an unknown field's
// over-long tag as it came (the standard library rewrites it), it drops
// unknown fields inside a Timestamp, and it rejects a known field
// sent with another wire type, which the standard library keeps as an
// unknown field. A store must never decode an entry differently from
// another master, so the input is first checked for what only the standard
// library checks (without allocating), a known field sent with another
// wire type included, and whatever either check refuses is decoded by
// gproto.Unmarshal, which then decides.
func Unmarshal(b []byte, m gproto.Message) error {
	if vt, ok := m.(vtMessage); ok {
		if r := wireRulesFor(m.ProtoReflect().Descriptor()); r != nil && r.valid(b, protowire.DefaultRecursionLimit) {
			gproto.Reset(m)
			if vt.UnmarshalVT(b) == nil {
				return nil
			}
		}
	}
	return gproto.Unmarshal(b, m)
}

// Marshal encodes m as deterministic gproto.Marshal does, map entries in
// key order included (the generated loops range over descendingKeys), in
// a fifth of its time. TestVTAgreesWithStandard holds the two to the same
// bytes. Two differences, both about messages that are not valid to begin
// with: a string that is not UTF-8 is written rather than refused (the
// receiving Unmarshal refuses it), and a oneof set to a nil message is
// left out instead of written empty (vtprotobuf v0.6.0, issue #61).
func Marshal(m gproto.Message) ([]byte, error) {
	return MarshalAppend(nil, m)
}

// MarshalAppend is Marshal appending to b.
func MarshalAppend(b []byte, m gproto.Message) ([]byte, error) {
	vt, ok := m.(vtMessage)
	if !ok {
		return gproto.MarshalOptions{Deterministic: true}.MarshalAppend(b, m)
	}
	n, size := len(b), vt.SizeVT()
	b = slices.Grow(b, size)[:n+size]
	if err := marshalSized(vt, b[n:]); err != nil {
		return nil, err
	}
	return b, nil
}

// marshalSized writes m into b, which is m.SizeVT() bytes long. The
// generated code writes from the end backwards, so a size that disagreed
// with what it wrote would leave garbage at the front: refuse it.
func marshalSized(m vtMessage, b []byte) error {
	n, err := m.MarshalToSizedBufferVT(b)
	if err != nil {
		return fmt.Errorf("marshal %T: %w", m, err)
	}
	if n != len(b) {
		return fmt.Errorf("marshal %T: wrote %d bytes, its size is %d", m, n, len(b))
	}
	return nil
}

// GRPCCodec returns a gRPC codec named "proto" that marshals skiff's
// messages with the generated vtprotobuf code and unmarshals them with
// Unmarshal, and hands every other message (grpc's own health or status
// messages) to gRPC's standard proto codec. Servers install it with
// grpc.ForceServerCodecV2 and clients with
// grpc.WithDefaultCallOptions(grpc.ForceCodecV2(...)); it is not
// registered globally, so a program that does not ask for it keeps gRPC's.
func GRPCCodec() encoding.CodecV2 {
	return grpcCodec{fallback: encoding.GetCodecV2(grpcproto.Name)}
}

type grpcCodec struct {
	fallback encoding.CodecV2 // gRPC's standard proto codec
}

func (grpcCodec) Name() string { return grpcproto.Name }

// preEncoded is a message whose parts were encoded before
// (EncodedListResponse, EncodedWatchEvent): the codec writes its wire form.
type preEncoded interface {
	wireSize() int
	appendWire(b []byte) []byte
}

func (c grpcCodec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(preEncoded); ok {
		return marshalPooled(e.wireSize(), func(b []byte) error {
			if n := len(e.appendWire(b[:0])); n != len(b) {
				return fmt.Errorf("marshal %T: wrote %d bytes, its size is %d", e, n, len(b))
			}
			return nil
		})
	}
	vt, ok := v.(vtMessage)
	if !ok {
		return c.fallback.Marshal(v)
	}
	return marshalPooled(vt.SizeVT(), func(b []byte) error { return marshalSized(vt, b) })
}

// marshalPooled has write fill a buffer of size bytes: a plain slice for a
// small message, else, as gRPC's codec does for large ones, a pooled buffer
// the transport returns after writing it.
func marshalPooled(size int, write func([]byte) error) (mem.BufferSlice, error) {
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if err := write(buf); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if err := write((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (c grpcCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(vtMessage)
	if !ok {
		return c.fallback.Unmarshal(data, v)
	}
	// The generated code copies every string and byte slice it keeps, so
	// the buffer can go back to the pool as soon as decoding ends.
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return Unmarshal(buf.ReadOnlyData(), m)
}

// wireRules is, for one message type, what the standard decoder checks
// that UnmarshalVT does not, indexed by field number (skiff's numbers are
// small; a number without a field has the zero fieldRule).
type wireRules struct {
	fields []fieldRule
	// dropsUnknown: vtprotobuf's code for this message (its copies of the
	// well-known types, like Timestamp) skips unknown fields instead of
	// keeping them, so input with one must go to the standard library.
	dropsUnknown bool
}

func (r *wireRules) rule(num protowire.Number) fieldRule {
	if int(num) < len(r.fields) {
		return r.fields[num]
	}
	return fieldRule{}
}

type fieldRule struct {
	kind ruleKind
	// wire is the field's wire type. The standard decoder keeps a field
	// sent with another one as an unknown field; UnmarshalVT refuses it,
	// or, in a map entry, reads it as if it had the right type.
	wire protowire.Type
	// packed: a repeated scalar, which may also come packed (BytesType).
	packed bool
	msg    *wireRules // for ruleMessage (map fields: the entry message)
}

type ruleKind uint8

const (
	ruleNone    ruleKind = iota // not a field of the message
	ruleScalar                  // checked by the wire format alone
	ruleString                  // proto3 string: valid UTF-8
	ruleMessage                 // message: check inside
)

// allWireRules maps every skiff message to its rules. It is built once, on
// first use (the generated descriptors are initialised by init functions,
// after package variables), and never changed afterwards. Descriptors of
// generated messages are singletons, so they serve as keys.
var allWireRules = sync.OnceValue(func() map[protoreflect.MessageDescriptor]*wireRules {
	out := map[protoreflect.MessageDescriptor]*wireRules{}
	for _, fd := range []protoreflect.FileDescriptor{
		File_meta_proto, File_core_proto, File_apps_proto, File_object_proto,
		File_raft_proto, File_api_proto, File_node_proto,
	} {
		addWireRules(out, fd.Messages())
	}
	return out
})

func wireRulesFor(md protoreflect.MessageDescriptor) *wireRules {
	return allWireRules()[md]
}

func addWireRules(out map[protoreflect.MessageDescriptor]*wireRules, mds protoreflect.MessageDescriptors) {
	for i := range mds.Len() {
		buildWireRules(out, mds.Get(i))
		addWireRules(out, mds.Get(i).Messages())
	}
}

// maxRuleNumber bounds the field numbers wireRules index in a slice.
// skiff's are below 100; a larger one fails every test at once.
const maxRuleNumber = 4096

// buildWireRules returns md's rules, building them (and those of the
// messages it holds, including well-known types like Timestamp) once.
func buildWireRules(out map[protoreflect.MessageDescriptor]*wireRules, md protoreflect.MessageDescriptor) *wireRules {
	if r, ok := out[md]; ok {
		return r
	}
	r := &wireRules{dropsUnknown: md.ParentFile().Package() == "google.protobuf"}
	out[md] = r // before the fields: a message may hold itself
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		rule := fieldRule{kind: ruleScalar, wire: wireType(fd.Kind())}
		switch {
		case fd.Kind() == protoreflect.MessageKind:
			rule.kind, rule.msg = ruleMessage, buildWireRules(out, fd.Message())
		case fd.Kind() == protoreflect.StringKind && fd.Syntax() == protoreflect.Proto3:
			rule.kind = ruleString
		case fd.IsList() && rule.wire != protowire.BytesType:
			rule.packed = true
		}
		if fd.Number() > maxRuleNumber {
			panic(fmt.Sprintf("proto: field %s has number %d: wireRules index fields up to %d, raise maxRuleNumber", fd.FullName(), fd.Number(), maxRuleNumber))
		}
		if n := int(fd.Number()) + 1; n > len(r.fields) {
			r.fields = append(r.fields, make([]fieldRule, n-len(r.fields))...)
		}
		r.fields[fd.Number()] = rule
	}
	return r
}

func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	return protowire.VarintType
}

// valid reports whether the standard decoder would accept b as this
// message, and decode it as UnmarshalVT does, as far as the checks
// UnmarshalVT leaves out go. It errs only towards false, which costs a
// decode by the standard library.
func (r *wireRules) valid(b []byte, depth int) bool {
	if depth <= 0 {
		return false
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		// An over-long tag: the standard library keeps an unknown field
		// with its tag rewritten, UnmarshalVT as it came.
		if n < 0 || num > protowire.MaxValidNumber || n != protowire.SizeTag(num) {
			return false
		}
		b = b[n:]
		rule := r.rule(num)
		switch {
		case rule.kind == ruleNone:
			if r.dropsUnknown {
				return false
			}
		case typ == rule.wire:
		case rule.packed && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !validPacked(v, rule.wire) {
				return false
			}
			b = b[n:]
			continue
		default:
			return false
		}
		if rule.kind <= ruleScalar {
			// Scalars and unknown fields: ConsumeFieldValue checks varint
			// ranges, group nesting and end tags as the decoder does.
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if rule.kind == ruleString && !utf8.Valid(v) || rule.kind == ruleMessage && !rule.msg.valid(v, depth-1) {
			return false
		}
	}
	return true
}

// validPacked checks the elements of a packed repeated field.
func validPacked(v []byte, wire protowire.Type) bool {
	switch wire {
	case protowire.Fixed32Type:
		return len(v)%4 == 0
	case protowire.Fixed64Type:
		return len(v)%8 == 0
	}
	for len(v) > 0 {
		_, k := protowire.ConsumeVarint(v)
		if k < 0 {
			return false
		}
		v = v[k:]
	}
	return true
}
