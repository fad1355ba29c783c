package proto

import (
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// fieldPath is a field path for validation that costs nothing until a rule
// finds an error: Validate visits every field of an object, valid or not,
// and apimachinery's field.Path allocates each step (it was 45 % of
// BenchmarkValidatePod). A fieldPath is a small value linking to its parent;
// the steps a rule takes stay on the stack, and the path is written out
// (String, in field.Path's notation) only for an error.
//
// Its methods mirror field.Path's: newPath, Child, Index and Key. The
// error constructors below (invalid, required, ...) take one in place of a
// *field.Path.
type fieldPath struct {
	parent *fieldPath
	// name is the field's name; "" for a subscript (index or key).
	name string
	// key is the subscript's map key when isKey, else index is.
	key   string
	index int
	isKey bool
}

func newPath(name string) *fieldPath { return &fieldPath{name: name} }

// Child is the field name of p.
func (p *fieldPath) Child(name string) *fieldPath { return &fieldPath{parent: p, name: name} }

// Index is p's element i.
func (p *fieldPath) Index(i int) *fieldPath { return &fieldPath{parent: p, index: i} }

// Key is p's entry k.
func (p *fieldPath) Key(k string) *fieldPath { return &fieldPath{parent: p, key: k, isKey: true} }

// String writes p as field.Path does: "spec.containers[0].env[FOO]".
func (p *fieldPath) String() string {
	var b strings.Builder
	p.write(&b)
	return b.String()
}

func (p *fieldPath) write(b *strings.Builder) {
	if p.parent != nil {
		p.parent.write(b)
	}
	switch {
	case p.name != "":
		if p.parent != nil {
			b.WriteByte('.')
		}
		b.WriteString(p.name)
	case p.isKey:
		b.WriteByte('[')
		b.WriteString(p.key)
		b.WriteByte(']')
	default:
		b.WriteByte('[')
		b.WriteString(strconv.Itoa(p.index))
		b.WriteByte(']')
	}
}

// field is p as a field.Path, for an error.
func (p *fieldPath) field() *field.Path { return field.NewPath(p.String()) }

func invalid(p *fieldPath, value any, detail string) *field.Error {
	return field.Invalid(p.field(), value, detail)
}

func required(p *fieldPath, detail string) *field.Error { return field.Required(p.field(), detail) }

func forbidden(p *fieldPath, detail string) *field.Error { return field.Forbidden(p.field(), detail) }

func duplicate(p *fieldPath, value any) *field.Error { return field.Duplicate(p.field(), value) }

func notFound(p *fieldPath, value any) *field.Error { return field.NotFound(p.field(), value) }

func tooLong(p *fieldPath, value any, maxLength int) *field.Error {
	return field.TooLong(p.field(), value, maxLength)
}

func notSupported[T ~string](p *fieldPath, value any, valid []T) *field.Error {
	return field.NotSupported(p.field(), value, valid)
}
