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
	num, res, err := resourceOf(raw)
	if err != nil {
		return dst, err
	}
	keep := kindFields()[num].metadata
	// Twice over the resource's fields: first the size of what is kept,
	// for its length prefix, then the copy.
	size := 0
	err = eachField(res, func(num protowire.Number, field []byte) {
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

// SizeWithStatus returns the size of the encoding of the Object encoded in
// raw once its status is replaced by one whose own encoding is statusSize
// bytes (negative: no status), as SizeVT would of the object so changed. It
// works on the encoding, so a master checks a status update against the
// size limit without decoding the stored object. ok is false for a kind
// without status.
func SizeWithStatus(raw []byte, statusSize int) (size int, ok bool, err error) {
	num, res, err := resourceOf(raw)
	if err != nil {
		return 0, false, err
	}
	status := kindFields()[num].status
	if status == 0 {
		return 0, false, nil
	}
	size = len(res)
	err = eachField(res, func(num protowire.Number, field []byte) {
		if num == status {
			size -= len(field)
		}
	})
	if err != nil {
		return 0, false, fmt.Errorf("object: %w", err)
	}
	if statusSize >= 0 {
		size += protowire.SizeTag(status) + protowire.SizeBytes(statusSize)
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(size), true, nil
}

// resourceOf returns the field number of the kind of the Object encoded in
// raw, and the encoding of its resource.
func resourceOf(raw []byte) (protowire.Number, []byte, error) {
	num, typ, n := protowire.ConsumeTag(raw)
	if n < 0 {
		return 0, nil, fmt.Errorf("object: %w", protowire.ParseError(n))
	}
	if _, ok := kindFields()[num]; typ != protowire.BytesType || !ok {
		return 0, nil, fmt.Errorf("object: field %d (wire type %d) is not a kind", num, typ)
	}
	res, m := protowire.ConsumeBytes(raw[n:])
	if m < 0 {
		return 0, nil, fmt.Errorf("object: %w", protowire.ParseError(m))
	}
	if n+m != len(raw) {
		return 0, nil, errors.New("object: more than one kind")
	}
	return num, res, nil
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

// kindFieldNumbers are the numbers of a kind's api_version, kind and
// metadata fields, and of its status field (0 if it has none).
type kindFieldNumbers struct {
	metadata map[protowire.Number]bool
	status   protowire.Number
}

// kindFields maps each field number of Object's kinds to the numbers of
// the fields of that kind that AppendMetadata and SizeWithStatus work on.
var kindFields = sync.OnceValue(func() map[protowire.Number]kindFieldNumbers {
	out := map[protowire.Number]kindFieldNumbers{}
	fields := (&Object{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Message() == nil {
			continue
		}
		k := kindFieldNumbers{metadata: map[protowire.Number]bool{}}
		for _, name := range []protoreflect.Name{"api_version", "kind", "metadata"} {
			if f := fd.Message().Fields().ByName(name); f != nil {
				k.metadata[f.Number()] = true
			}
		}
		if f := fd.Message().Fields().ByName("status"); f != nil && f.Message() != nil {
			k.status = f.Number()
		}
		out[fd.Number()] = k
	}
	return out
})
