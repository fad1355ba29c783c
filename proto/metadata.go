package proto

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// AppendMetadata appends to dst the encoding of the Object encoded in raw
// reduced to its apiVersion, kind and metadata: the form in which the
// garbage collector's and the namespace controller's informers keep every
// object of the cluster (Kubernetes' PartialObjectMetadata). It works on the
// encoding, copying those three fields' bytes as they are, so a master
// listing every object for them decodes nothing it then throws away. An
// empty Object gives an empty encoding.
func AppendMetadata(dst, raw []byte) ([]byte, error) {
	if len(raw) == 0 {
		return dst, nil
	}
	num, typ, n := protowire.ConsumeTag(raw)
	if n < 0 {
		return dst, fmt.Errorf("object: %w", protowire.ParseError(n))
	}
	keep := metadataFieldNumbers()[num]
	if typ != protowire.BytesType || keep == nil {
		return dst, fmt.Errorf("object: field %d (wire type %d) is not a kind", num, typ)
	}
	res, m := protowire.ConsumeBytes(raw[n:])
	if m < 0 {
		return dst, fmt.Errorf("object: %w", protowire.ParseError(m))
	}
	if n+m != len(raw) {
		return dst, errors.New("object: more than one kind")
	}
	// Twice over the resource's fields: first the size of what is kept,
	// for its length prefix, then the copy.
	size := 0
	err := eachField(res, func(num protowire.Number, field []byte) {
		if keep[num] {
			size += len(field)
		}
	})
	if err != nil {
		return dst, fmt.Errorf("object: %w", err)
	}
	dst = slices.Grow(dst, protowire.SizeTag(num)+protowire.SizeBytes(size))
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(size))
	_ = eachField(res, func(num protowire.Number, field []byte) {
		if keep[num] {
			dst = append(dst, field...)
		}
	})
	return dst, nil
}

// eachField calls fn with the number and the whole encoding (tag and value)
// of every field of the message encoded in b, in order.
func eachField(b []byte, fn func(num protowire.Number, field []byte)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		fn(num, b[:n+m])
		b = b[n+m:]
	}
	return nil
}

// metadataFieldNumbers maps each field number of Object's kinds to the
// numbers of that kind's api_version, kind and metadata fields.
var metadataFieldNumbers = sync.OnceValue(func() map[protowire.Number]map[protowire.Number]bool {
	out := map[protowire.Number]map[protowire.Number]bool{}
	fields := (&Object{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Message() == nil {
			continue
		}
		keep := map[protowire.Number]bool{}
		for _, name := range []protoreflect.Name{"api_version", "kind", "metadata"} {
			if f := fd.Message().Fields().ByName(name); f != nil {
				keep[f.Number()] = true
			}
		}
		out[fd.Number()] = keep
	}
	return out
})
