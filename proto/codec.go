package proto

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// Manifests are read and written by walking the protobuf descriptors rather
// than through protojson, because Kubernetes' JSON differs from protojson's
// in ways a manifest user sees: int64 fields are numbers, int-or-string and
// quantity fields take numbers, only lowerCamelCase names are accepted, and
// every mistake must be reported with its field path. One walker per
// direction keeps the rules in one place (specialFields below).

// ErrManifest is wrapped by every error DecodeManifests and DecodeObject
// return for input that is not a valid manifest.
var ErrManifest = errors.New("invalid manifest")

// fieldKind marks the fields whose JSON form is not the plain protobuf one.
type fieldKind int

const (
	plainField fieldKind = iota
	// intOrString is a string field holding Kubernetes' IntOrString: it
	// accepts a JSON number and prints an integer as a number.
	intOrString
	// quantity is a string field, or a map of strings, holding
	// resource.Quantity values: it accepts JSON numbers; it prints strings.
	quantity
	// resourceVersion is a uint64 printed as a JSON string, as Kubernetes'
	// opaque resourceVersion is.
	resourceVersion
)

// specialFields lists every field whose JSON form differs from the plain
// protobuf mapping, keyed by protobuf full field name. A test checks that
// every name resolves.
var specialFields = map[protoreflect.FullName]fieldKind{
	"skiff.v1.ServicePort.target_port":                 intOrString,
	"skiff.v1.HTTPGetAction.port":                      intOrString,
	"skiff.v1.TCPSocketAction.port":                    intOrString,
	"skiff.v1.RollingUpdateDeployment.max_unavailable": intOrString,
	"skiff.v1.RollingUpdateDeployment.max_surge":       intOrString,
	"skiff.v1.RollingUpdateDaemonSet.max_unavailable":  intOrString,
	"skiff.v1.RollingUpdateDaemonSet.max_surge":        intOrString,

	"skiff.v1.ResourceRequirements.limits":      quantity,
	"skiff.v1.ResourceRequirements.requests":    quantity,
	"skiff.v1.NodeStatus.capacity":              quantity,
	"skiff.v1.NodeStatus.allocatable":           quantity,
	"skiff.v1.EmptyDirVolumeSource.size_limit":  quantity,
	"skiff.v1.ResourceFieldSelector.divisor":    quantity,
	"skiff.v1.ObjectMeta.resource_version":      resourceVersion,
	"skiff.v1.ObjectReference.resource_version": resourceVersion,
}

// emittedZeroFields are proto3 scalars that print even when zero, because
// Kubernetes' Go types declare them without omitempty: a container that
// exited 0 shows exitCode: 0, a fresh container restartCount: 0 and
// ready: false, a scaled-down ReplicaSet replicas: 0. Other zero scalars
// stay omitted as Kubernetes omits them (EmitUnpopulated would print every
// empty field). They print only inside a message that is present.
var emittedZeroFields = map[protoreflect.FullName]bool{
	"skiff.v1.ContainerStatus.ready":                    true,
	"skiff.v1.ContainerStatus.restart_count":            true,
	"skiff.v1.ContainerStateTerminated.exit_code":       true,
	"skiff.v1.ReplicaSetStatus.replicas":                true,
	"skiff.v1.DaemonSetStatus.current_number_scheduled": true,
	"skiff.v1.DaemonSetStatus.number_misscheduled":      true,
	"skiff.v1.DaemonSetStatus.desired_number_scheduled": true,
	"skiff.v1.DaemonSetStatus.number_ready":             true,
}

// droppedFields are fields Kubernetes' servers write that skiff does not
// keep; they are accepted and ignored so that `kubectl get -o yaml` output
// applies unchanged. Any other unknown field is an error.
var droppedFields = map[protoreflect.FullName]map[string]bool{
	"skiff.v1.ObjectMeta": {"managedFields": true, "selfLink": true},
}

const timestampName protoreflect.FullName = "google.protobuf.Timestamp"

// DocumentError reports what is wrong with one document of a manifest. Its
// message reads like
//
//	document 2 (Deployment web): spec.replicas: expected integer, got string
type DocumentError struct {
	Document int // 1-based position among the input's non-empty documents
	Item     int // 0-based position in a List's items, or -1
	Line     int // 1-based line of the input where the document starts
	Kind     string
	Name     string
	// Errors lists problems with fields; Err is set instead for problems
	// with the document as a whole (syntax, missing or unknown kind).
	Errors []FieldError
	Err    error
}

func (e *DocumentError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "document %d", e.Document)
	if e.Item >= 0 {
		fmt.Fprintf(&b, ", items[%d]", e.Item)
	}
	if e.Kind != "" {
		b.WriteString(" (" + e.Kind)
		if e.Name != "" {
			b.WriteString(" " + e.Name)
		}
		b.WriteString(")")
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	for i, fe := range e.Errors {
		if i > 0 || e.Err != nil {
			b.WriteString("; ")
		}
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrManifest) true.
func (e *DocumentError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrManifest, e.Err}
	}
	return []error{ErrManifest}
}

// DecodeManifests parses one or more YAML or JSON documents into objects:
// YAML documents separated by "---", a stream of JSON objects, or a
// Kubernetes List ("kind: List", or a typed list such as PodList) whose items
// are objects. apiVersion and kind choose the type; unknown fields and values
// of the wrong type are errors that name the field path. Empty documents are
// skipped. On any error it returns no objects and an error wrapping
// ErrManifest that describes every bad document (each a *DocumentError).
func DecodeManifests(data []byte) ([]*Object, error) {
	mos, err := DecodeManifestObjects(data)
	if err != nil {
		return nil, err
	}
	var out []*Object
	for _, mo := range mos {
		out = append(out, mo.Object)
	}
	return out, nil
}

// ManifestObject is one object of a manifest with where it came from, so
// that checks made after decoding (validation, a server's answer) can name
// the document the way DecodeManifests' errors do.
type ManifestObject struct {
	Object   *Object
	Document int // 1-based position among the input's non-empty documents
	Item     int // 0-based position in a List's items, or -1
	Line     int // 1-based line of the input where the document starts
}

// DecodeManifestObjects is DecodeManifests, returning each object with its
// position in the input.
func DecodeManifestObjects(data []byte) ([]ManifestObject, error) {
	docs := splitDocuments(data)
	var out []ManifestObject
	var errs []error
	for _, d := range docs {
		if d.err != nil {
			errs = append(errs, d.err)
			continue
		}
		objs, err := decodeDocument(d)
		if err != nil {
			errs = append(errs, err...)
			continue
		}
		top, _ := d.value.(map[string]any)
		kind, _ := top["kind"].(string)
		isList := strings.HasSuffix(kind, "List") // as decodeDocument decides
		for i, o := range objs {
			mo := ManifestObject{Object: o, Document: d.index, Item: -1, Line: d.line}
			if isList {
				mo.Item = i
			}
			out = append(out, mo)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// DecodeObject decodes input holding exactly one object.
func DecodeObject(data []byte) (*Object, error) {
	objs, err := DecodeManifests(data)
	if err != nil {
		return nil, err
	}
	if len(objs) != 1 {
		return nil, fmt.Errorf("%w: expected exactly one object, found %d", ErrManifest, len(objs))
	}
	return objs[0], nil
}

// document is one document of the input, parsed into generic JSON values
// (map[string]any, []any, string, json.Number, bool, nil).
type document struct {
	index int
	line  int
	value any
	dups  []FieldError // duplicate keys found in JSON input
	err   error
}

var utf8BOM = []byte("\xef\xbb\xbf")

// splitDocuments parses the input into documents, dropping empty ones.
func splitDocuments(data []byte) []document {
	data = bytes.TrimPrefix(data, utf8BOM)
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		if docs, ok := splitJSON(data); ok {
			return docs
		}
	}
	return splitYAML(data)
}

// splitJSON reads a stream of JSON values. ok is false if the first value is
// not valid JSON, so that the caller can try YAML (a flow mapping such as
// "{a: 1}" is YAML but not JSON).
func splitJSON(data []byte) (docs []document, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for n := 1; ; n++ {
		start := int(dec.InputOffset())
		p := &jsonParser{dec: dec}
		v, err := p.value(nil)
		if errors.Is(err, io.EOF) && n > 1 {
			return docs, true
		}
		line := lineAt(data, start+countSpace(data[start:]))
		if err != nil {
			if n == 1 {
				return nil, false
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = errors.New("json: unexpected end of input")
			}
			var se *json.SyntaxError
			if errors.As(err, &se) {
				err = fmt.Errorf("json: line %d: %s", lineAt(data, int(se.Offset)), se.Error())
			}
			docs = append(docs, document{index: n, line: line, err: &DocumentError{Document: n, Item: -1, Line: line, Err: err}})
			return docs, true
		}
		if v == nil {
			n--
			continue
		}
		docs = append(docs, document{index: n, line: line, value: v, dups: p.dups})
	}
}

func countSpace(b []byte) int {
	return len(b) - len(bytes.TrimLeft(b, " \t\r\n"))
}

func lineAt(data []byte, off int) int {
	off = min(max(off, 0), len(data))
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// jsonParser decodes one JSON value token by token so that it can report
// duplicate keys, which encoding/json silently lets the last one win.
type jsonParser struct {
	dec   *json.Decoder
	dups  []FieldError
	depth int
}

var errUnexpectedDelim = errors.New("unexpected delimiter")

func (p *jsonParser) value(path *field.Path) (any, error) {
	tok, err := p.dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) && p.depth > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		p.depth++
		defer func() { p.depth-- }()
		switch t {
		case '{':
			obj := map[string]any{}
			for p.dec.More() {
				kt, err := p.dec.Token()
				if err != nil {
					if errors.Is(err, io.EOF) {
						err = io.ErrUnexpectedEOF
					}
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, errUnexpectedDelim
				}
				kp := childPath(path, k)
				v, err := p.value(kp)
				if err != nil {
					return nil, err
				}
				if _, dup := obj[k]; dup {
					p.dups = append(p.dups, FieldError{Path: kp.String(), Message: "duplicate field"})
				}
				obj[k] = v
			}
			if _, err := p.dec.Token(); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
			return obj, nil
		case '[':
			arr := []any{}
			for p.dec.More() {
				v, err := p.value(path.Index(len(arr)))
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := p.dec.Token(); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
			return arr, nil
		}
		return nil, errUnexpectedDelim
	default:
		return t, nil
	}
}

// splitYAML cuts YAML input into documents at "---" and "..." marker lines
// and converts each to JSON values. YAML forbids those markers at the start
// of a line inside any scalar, so cutting on lines is exact; each chunk keeps
// its marker line so that parser errors carry correct line numbers.
func splitYAML(data []byte) []document {
	var docs []document
	var (
		start      = 0 // byte offset of the current chunk
		startLine  = 1
		hasContent = false
		sawMarker  = false
	)
	emit := func(end int) {
		if hasContent {
			n := len(docs) + 1
			docs = append(docs, yamlDocument(n, startLine, data[start:end]))
		}
	}
	line := 1
	for off := 0; off < len(data); line++ {
		end := off + bytes.IndexByte(data[off:], '\n') + 1
		if end == off { // last line without a newline
			end = len(data)
		}
		text := bytes.TrimRight(data[off:end], "\r\n")
		switch {
		case isMarker(text, "---"):
			if hasContent || sawMarker {
				emit(off)
				start, startLine = off, line
			}
			sawMarker = true
			rest := bytes.TrimSpace(text[3:])
			hasContent = len(rest) > 0 && rest[0] != '#'
		case isMarker(text, "..."):
			emit(end)
			start, startLine = end, line+1
			hasContent, sawMarker = false, false
		default:
			t := bytes.TrimSpace(text)
			if len(t) > 0 && t[0] != '#' && !(t[0] == '%' && !sawMarker && !hasContent) {
				hasContent = true
			}
		}
		off = end
	}
	emit(len(data))
	// Documents that hold only null ("~") are empty too.
	out := docs[:0]
	for _, d := range docs {
		if d.err == nil && d.value == nil {
			continue
		}
		d.index = len(out) + 1
		if de, ok := d.err.(*DocumentError); ok {
			de.Document = d.index
		}
		out = append(out, d)
	}
	return out
}

func isMarker(line []byte, marker string) bool {
	if !bytes.HasPrefix(line, []byte(marker)) {
		return false
	}
	return len(line) == 3 || line[3] == ' ' || line[3] == '\t'
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

func yamlDocument(n, startLine int, chunk []byte) document {
	d := document{index: n, line: startLine}
	j, err := yaml.YAMLToJSONStrict(chunk)
	if err != nil {
		// Make the parser's line numbers count from the start of the input,
		// and keep the message on one line.
		msg := yamlLineRE.ReplaceAllStringFunc(err.Error(), func(s string) string {
			l, _ := strconv.Atoi(s[len("line "):])
			return "line " + strconv.Itoa(l+startLine-1)
		})
		msg = strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", " ")), " ")
		d.err = &DocumentError{Document: n, Item: -1, Line: startLine, Err: errors.New(msg)}
		return d
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&d.value); err != nil {
		d.err = &DocumentError{Document: n, Item: -1, Line: startLine, Err: err}
	}
	return d
}

// decodeDocument turns one document's value into objects: one, or a List's
// items.
func decodeDocument(d document) ([]*Object, []error) {
	top, ok := d.value.(map[string]any)
	if !ok {
		return nil, []error{&DocumentError{Document: d.index, Item: -1, Line: d.line,
			Err: fmt.Errorf("expected an object, got %s", jsonType(d.value))}}
	}
	kind, _ := top["kind"].(string)
	if base, isList := strings.CutSuffix(kind, "List"); isList {
		return decodeList(d, top, base)
	}
	o, err := decodeTop(top, d.dups)
	if err != nil {
		err.Document, err.Item, err.Line = d.index, -1, d.line
		return nil, []error{err}
	}
	return []*Object{o}, nil
}

// decodeList decodes a List ("List", or a typed list such as "PodList"
// whose items may omit apiVersion and kind).
func decodeList(d document, top map[string]any, base string) ([]*Object, []error) {
	bad := func(err error) ([]*Object, []error) {
		return nil, []error{&DocumentError{Document: d.index, Item: -1, Line: d.line, Kind: top["kind"].(string), Err: err}}
	}
	var itemKind KindInfo
	if base != "" {
		ki, ok := kindByName(base)
		if !ok {
			return bad(fmt.Errorf("unknown kind %q", top["kind"]))
		}
		itemKind = ki
	}
	var fes []FieldError
	for _, k := range sortedKeys(top) {
		switch k {
		case "apiVersion", "kind", "items":
		case "metadata": // ListMeta: resourceVersion, continue; nothing to keep
		default:
			fes = append(fes, FieldError{Path: k, Message: "unknown field"})
		}
	}
	if len(fes) > 0 {
		return nil, []error{&DocumentError{Document: d.index, Item: -1, Line: d.line, Kind: top["kind"].(string), Errors: fes}}
	}
	if av, ok := top["apiVersion"]; ok && itemKind.Kind != "" && av != itemKind.APIVersion {
		return bad(fmt.Errorf("apiVersion %v is not supported for %s, use %q", jsonString(av), top["kind"], itemKind.APIVersion))
	}
	raw, ok := top["items"].([]any)
	if !ok && top["items"] != nil {
		return bad(fmt.Errorf("items: expected array, got %s", jsonType(top["items"])))
	}
	var out []*Object
	var errs []error
	for i, it := range raw {
		m, ok := it.(map[string]any)
		if !ok {
			errs = append(errs, &DocumentError{Document: d.index, Item: i, Line: d.line,
				Err: fmt.Errorf("expected an object, got %s", jsonType(it))})
			continue
		}
		if itemKind.Kind != "" {
			if _, ok := m["kind"]; !ok {
				m["kind"] = itemKind.Kind
			}
			if _, ok := m["apiVersion"]; !ok {
				m["apiVersion"] = itemKind.APIVersion
			}
		}
		if k, _ := m["kind"].(string); strings.HasSuffix(k, "List") {
			errs = append(errs, &DocumentError{Document: d.index, Item: i, Line: d.line, Kind: k, Err: errors.New("a List may not hold another List")})
			continue
		}
		o, err := decodeTop(m, dupsUnder(d.dups, fmt.Sprintf("items[%d]", i)))
		if err != nil {
			err.Document, err.Item, err.Line = d.index, i, d.line
			errs = append(errs, err)
			continue
		}
		out = append(out, o)
	}
	if errs != nil {
		return nil, errs
	}
	return out, nil
}

// dupsUnder returns the duplicate-key errors under prefix, with the prefix
// removed from their paths.
func dupsUnder(dups []FieldError, prefix string) []FieldError {
	var out []FieldError
	for _, fe := range dups {
		if rest, ok := strings.CutPrefix(fe.Path, prefix+"."); ok {
			out = append(out, FieldError{Path: rest, Message: fe.Message})
		}
	}
	return out
}

func kindByName(kind string) (KindInfo, bool) {
	for _, k := range kindTable {
		if k.Kind == kind {
			return k, true
		}
	}
	return KindInfo{}, false
}

// decodeTop decodes one object. The returned error's position fields are
// filled in by the caller.
func decodeTop(top map[string]any, dups []FieldError) (*Object, *DocumentError) {
	de := &DocumentError{}
	kind, kindOK := top["kind"].(string)
	apiVersion, avOK := top["apiVersion"].(string)
	if md, ok := top["metadata"].(map[string]any); ok {
		de.Name, _ = md["name"].(string)
		if de.Name == "" {
			de.Name, _ = md["generateName"].(string)
		}
	}
	switch {
	case top["kind"] == nil:
		de.Err = errors.New("kind not set")
	case !kindOK:
		de.Err = fmt.Errorf("kind: expected string, got %s", jsonType(top["kind"]))
	case top["apiVersion"] == nil:
		de.Kind = kind
		de.Err = errors.New("apiVersion not set")
	case !avOK:
		de.Kind = kind
		de.Err = fmt.Errorf("apiVersion: expected string, got %s", jsonType(top["apiVersion"]))
	}
	if de.Err != nil {
		return nil, de
	}
	de.Kind = kind
	ki, ok := kindByName(kind)
	if !ok {
		if alt, ok := LookupKind(kind); ok {
			de.Err = fmt.Errorf("unknown kind %q (apiVersion %q); did you mean %q?", kind, apiVersion, alt.Kind)
		} else {
			de.Err = fmt.Errorf("unknown kind %q (apiVersion %q)", kind, apiVersion)
		}
		return nil, de
	}
	if apiVersion != ki.APIVersion {
		de.Err = fmt.Errorf("apiVersion %q is not supported for %s, use %q", apiVersion, kind, ki.APIVersion)
		return nil, de
	}
	r := ki.New()
	d := decoder{errs: dups}
	d.message(r.ProtoReflect(), top, nil)
	if len(d.errs) > 0 {
		de.Errors = d.errs
		return nil, de
	}
	return Wrap(r), nil
}

// decoder fills a message from generic JSON values, collecting every
// problem with its path.
type decoder struct {
	errs []FieldError
}

func (d *decoder) fail(p *field.Path, format string, args ...any) {
	d.errs = append(d.errs, FieldError{Path: p.String(), Message: fmt.Sprintf(format, args...)})
}

func (d *decoder) typeErr(p *field.Path, want string, got any) {
	d.fail(p, "expected %s, got %s", want, jsonType(got))
}

func childPath(p *field.Path, name string) *field.Path {
	if p == nil {
		return field.NewPath(name)
	}
	return p.Child(name)
}

func (d *decoder) message(m protoreflect.Message, v any, p *field.Path) {
	obj, ok := v.(map[string]any)
	if !ok {
		d.typeErr(p, "object", v)
		return
	}
	fields := m.Descriptor().Fields()
	for _, k := range sortedKeys(obj) {
		fp := childPath(p, k)
		fd := fields.ByJSONName(k)
		if fd == nil && droppedFields[m.Descriptor().FullName()][k] {
			continue
		}
		if fd == nil {
			d.fail(fp, "unknown field")
			continue
		}
		if obj[k] == nil { // null means unset, as in Kubernetes
			continue
		}
		d.field(m, fd, obj[k], fp)
	}
}

func isMessage(fd protoreflect.FieldDescriptor) bool {
	return fd.Message() != nil && fd.Message().FullName() != timestampName
}

func (d *decoder) field(m protoreflect.Message, fd protoreflect.FieldDescriptor, v any, p *field.Path) {
	special := specialFields[fd.FullName()]
	switch {
	case fd.IsList():
		arr, ok := v.([]any)
		if !ok {
			d.typeErr(p, "array", v)
			return
		}
		l := m.Mutable(fd).List()
		for i, e := range arr {
			ep := p.Index(i)
			if isMessage(fd) {
				el := l.NewElement()
				if e != nil {
					d.message(el.Message(), e, ep)
				}
				l.Append(el)
			} else if val, ok := d.scalar(fd, special, e, ep); ok {
				l.Append(val)
			}
		}
	case fd.IsMap():
		obj, ok := v.(map[string]any)
		if !ok {
			d.typeErr(p, "object", v)
			return
		}
		mp := m.Mutable(fd).Map()
		vfd := fd.MapValue()
		for _, k := range sortedKeys(obj) {
			kp := p.Key(k)
			mk, ok := d.mapKey(fd.MapKey(), k, kp)
			if !ok {
				continue
			}
			if isMessage(vfd) {
				mv := mp.NewValue()
				if obj[k] != nil {
					d.message(mv.Message(), obj[k], kp)
				}
				mp.Set(mk, mv)
			} else if val, ok := d.scalar(vfd, special, obj[k], kp); ok {
				mp.Set(mk, val)
			}
		}
	case isMessage(fd):
		d.message(m.Mutable(fd).Message(), v, p)
	default:
		if val, ok := d.scalar(fd, special, v, p); ok {
			m.Set(fd, val)
		}
	}
}

func (d *decoder) mapKey(fd protoreflect.FieldDescriptor, k string, p *field.Path) (protoreflect.MapKey, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(k).MapKey(), true
	case protoreflect.BoolKind:
		switch k {
		case "true":
			return protoreflect.ValueOfBool(true).MapKey(), true
		case "false":
			return protoreflect.ValueOfBool(false).MapKey(), true
		}
	default:
		if v, ok := d.scalar(fd, plainField, json.Number(k), p); ok {
			return v.MapKey(), true
		}
		return protoreflect.MapKey{}, false
	}
	d.fail(p, "invalid map key")
	return protoreflect.MapKey{}, false
}

// scalar converts a JSON value for a non-message field (or a Timestamp).
// null yields the zero value: it only reaches here as a list element or
// map value, where Kubernetes' decoder does the same.
func (d *decoder) scalar(fd protoreflect.FieldDescriptor, special fieldKind, v any, p *field.Path) (protoreflect.Value, bool) {
	if v == nil {
		if fd.Message() != nil {
			return protoreflect.ValueOfMessage((&timestamppb.Timestamp{}).ProtoReflect()), true
		}
		return zeroScalar(fd), true
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		switch x := v.(type) {
		case string:
			return protoreflect.ValueOfString(x), true
		case json.Number:
			switch special {
			case intOrString:
				n, err := parseInt(string(x), 32)
				if err != nil {
					d.fail(p, "expected integer or string, got number %s", x)
					return protoreflect.Value{}, false
				}
				return protoreflect.ValueOfString(strconv.FormatInt(n, 10)), true
			case quantity:
				return protoreflect.ValueOfString(string(x)), true
			}
		}
		if special == intOrString {
			d.typeErr(p, "integer or string", v)
		} else {
			d.typeErr(p, "string", v)
		}
	case protoreflect.BoolKind:
		if b, ok := v.(bool); ok {
			return protoreflect.ValueOfBool(b), true
		}
		d.typeErr(p, "boolean", v)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if n, ok := d.integer(v, p, false, 32); ok {
			return protoreflect.ValueOfInt32(int32(n)), true
		}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if n, ok := d.integer(v, p, true, 64); ok {
			return protoreflect.ValueOfInt64(n), true
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if n, ok := d.unsigned(v, p, false, special, 32); ok {
			return protoreflect.ValueOfUint32(uint32(n)), true
		}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if n, ok := d.unsigned(v, p, true, special, 64); ok {
			return protoreflect.ValueOfUint64(n), true
		}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if x, ok := v.(json.Number); ok {
			bits := 64
			if fd.Kind() == protoreflect.FloatKind {
				bits = 32
			}
			f, err := strconv.ParseFloat(string(x), bits)
			if err == nil {
				if fd.Kind() == protoreflect.FloatKind {
					return protoreflect.ValueOfFloat32(float32(f)), true
				}
				return protoreflect.ValueOfFloat64(f), true
			}
			d.fail(p, "number %s is out of range", x)
			return protoreflect.Value{}, false
		}
		d.typeErr(p, "number", v)
	case protoreflect.BytesKind:
		s, ok := v.(string)
		if !ok {
			d.typeErr(p, "base64 string", v)
			return protoreflect.Value{}, false
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			d.fail(p, "invalid base64: %v", err)
			return protoreflect.Value{}, false
		}
		return protoreflect.ValueOfBytes(b), true
	case protoreflect.EnumKind:
		// No skiff message uses enums (Kubernetes uses strings); accept the
		// protojson forms anyway so the walker is total.
		switch x := v.(type) {
		case string:
			if ev := fd.Enum().Values().ByName(protoreflect.Name(x)); ev != nil {
				return protoreflect.ValueOfEnum(ev.Number()), true
			}
			d.fail(p, "unknown value %q", x)
			return protoreflect.Value{}, false
		case json.Number:
			if n, ok := d.integer(x, p, false, 32); ok {
				return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n)), true
			}
			return protoreflect.Value{}, false
		}
		d.typeErr(p, "string", v)
	case protoreflect.MessageKind, protoreflect.GroupKind: // Timestamp
		s, ok := v.(string)
		if !ok {
			d.typeErr(p, "RFC 3339 timestamp string", v)
			return protoreflect.Value{}, false
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || t.Year() < 1 || t.Year() > 9999 {
			d.fail(p, "expected RFC 3339 timestamp, got %q", s)
			return protoreflect.Value{}, false
		}
		return protoreflect.ValueOfMessage(timestamppb.New(t).ProtoReflect()), true
	default:
		d.fail(p, "unsupported field type %s", fd.Kind())
	}
	return protoreflect.Value{}, false
}

// zeroScalar is the zero value of a scalar field's type (fd.Default is not
// defined for repeated fields).
func zeroScalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(false)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(0)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(0)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(0)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(0)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(0)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(0)
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte{})
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(0)
	}
	return protoreflect.ValueOfString("")
}

// integer accepts a JSON number, or, for int64 fields, also a string holding
// one (protojson prints int64 as strings).
func (d *decoder) integer(v any, p *field.Path, allowString bool, bits int) (int64, bool) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = string(x)
	case string:
		if !allowString {
			d.typeErr(p, "integer", v)
			return 0, false
		}
		s = x
	default:
		d.typeErr(p, "integer", v)
		return 0, false
	}
	n, err := parseInt(s, bits)
	if err != nil {
		d.fail(p, "%v", err)
		return 0, false
	}
	return n, true
}

func (d *decoder) unsigned(v any, p *field.Path, allowString bool, special fieldKind, bits int) (uint64, bool) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = string(x)
	case string:
		if !allowString && special != resourceVersion {
			d.typeErr(p, "integer", v)
			return 0, false
		}
		if x == "" && special == resourceVersion {
			return 0, true
		}
		s = x
	default:
		d.typeErr(p, "integer", v)
		return 0, false
	}
	n, err := parseUint(s, bits)
	if err != nil {
		if special == resourceVersion {
			d.fail(p, "expected a decimal resourceVersion, got %q", s)
		} else {
			d.fail(p, "%v", err)
		}
		return 0, false
	}
	return n, true
}

// parseInt parses a decimal integer. A fraction or exponent is accepted when
// the value is integral (YAML turns 1.0 into 1, JSON writers may print 1e3).
func parseInt(s string, bits int) (int64, error) {
	n, err := strconv.ParseInt(s, 10, bits)
	if err == nil {
		return n, nil
	}
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("integer %s is out of range", s)
	}
	f, ferr := strconv.ParseFloat(s, 64)
	if ferr != nil || !isNumber(s) {
		return 0, fmt.Errorf("expected integer, got %q", s)
	}
	if f != math.Trunc(f) {
		return 0, fmt.Errorf("expected integer, got number %s", s)
	}
	limit := math.Ldexp(1, bits-1)
	if f < -limit || f >= limit {
		return 0, fmt.Errorf("integer %s is out of range", s)
	}
	return int64(f), nil
}

func parseUint(s string, bits int) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, bits)
	if err == nil {
		return n, nil
	}
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("integer %s is out of range", s)
	}
	f, ferr := strconv.ParseFloat(s, 64)
	if ferr != nil || !isNumber(s) {
		return 0, fmt.Errorf("expected integer, got %q", s)
	}
	if f != math.Trunc(f) {
		return 0, fmt.Errorf("expected integer, got number %s", s)
	}
	if f < 0 || f >= math.Ldexp(1, bits) {
		return 0, fmt.Errorf("integer %s is out of range", s)
	}
	return uint64(f), nil
}

// isNumber reports whether s is a JSON number (ParseFloat also takes "Inf",
// "0x1p3" and underscores).
func isNumber(s string) bool {
	var v any
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if dec.Decode(&v) != nil || dec.More() {
		return false
	}
	_, ok := v.(json.Number)
	return ok
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number, float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func jsonString(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return jsonType(v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// EncodeJSON renders an object as Kubernetes does, compactly and without a
// trailing newline: apiVersion, kind and metadata first, then the other
// fields in declaration order; lowerCamelCase names; int64 fields as
// numbers; resourceVersion as a string; int-or-string fields holding an
// integer as numbers; unset fields omitted (a set but empty message prints
// as {}) except the few Kubernetes always prints (emittedZeroFields).
// apiVersion and kind always come from the object's type. The output
// round-trips through DecodeObject.
func EncodeJSON(o *Object) ([]byte, error) {
	return encodeJSON(o, "")
}

// encodeJSON is EncodeJSON, writing "<<" map keys as mergeKey if it is set.
func encodeJSON(o *Object, mergeKey string) ([]byte, error) {
	r := o.Resource()
	if r == nil {
		return nil, errors.New("encode: object is empty")
	}
	ki, ok := kindByName(KindOf(r))
	if !ok {
		return nil, fmt.Errorf("encode: unknown kind %s", KindOf(r))
	}
	e := encoder{buf: make([]byte, 0, 1024), mergeKey: mergeKey}
	e.buf = append(e.buf, `{"apiVersion":`...)
	e.buf = strconv.AppendQuote(e.buf, ki.APIVersion)
	e.buf = append(e.buf, `,"kind":`...)
	e.buf = strconv.AppendQuote(e.buf, ki.Kind)
	if err := e.fields(r.ProtoReflect(), true); err != nil {
		return nil, fmt.Errorf("encode %s: %w", ki.Kind, err)
	}
	e.buf = append(e.buf, '}')
	return e.buf, nil
}

// EncodeYAML renders EncodeJSON's output as YAML, with keys sorted as
// kubectl prints them.
func EncodeYAML(o *Object) ([]byte, error) {
	j, err := EncodeJSON(o)
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(j, []byte(`"\u003c\u003c":`)) { // a "<<" key
		return yaml.JSONToYAML(j)
	}
	// yaml.v2 writes a "<<" map key unquoted, which every YAML 1.1 reader
	// then takes for a merge key. Write such keys under a placeholder that
	// occurs nowhere else and quote them afterwards.
	placeholder := "skiff-merge-key"
	for n := 0; bytes.Contains(j, []byte(placeholder)); n++ {
		placeholder = "skiff-merge-key-" + strconv.Itoa(n)
	}
	j, err = encodeJSON(o, placeholder)
	if err != nil {
		return nil, err
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return nil, err
	}
	return bytes.ReplaceAll(y, []byte(placeholder+":"), []byte(`"<<":`)), nil
}

// encoder writes JSON into buf. path holds the segments of the field being
// written ("metadata", "[0]"), turned into a string only for an error.
type encoder struct {
	buf      []byte
	path     []string
	mergeKey string // see EncodeYAML
}

func (e *encoder) push(seg string) { e.path = append(e.path, seg) }
func (e *encoder) pop()            { e.path = e.path[:len(e.path)-1] }

func (e *encoder) errorf(format string, args ...any) error {
	var b strings.Builder
	for i, seg := range e.path {
		if i > 0 && seg[0] != '[' {
			b.WriteByte('.')
		}
		b.WriteString(seg)
	}
	return fmt.Errorf("%s: %s", b.String(), fmt.Sprintf(format, args...))
}

// fields writes the populated fields of m. At the top level the object has
// already started (apiVersion and kind are written), so every field gets a
// leading comma, and apiVersion and kind are skipped.
func (e *encoder) fields(m protoreflect.Message, top bool) error {
	fields := m.Descriptor().Fields()
	first := !top
	for i := range fields.Len() {
		fd := fields.Get(i)
		if top && (fd.Name() == "api_version" || fd.Name() == "kind") {
			continue
		}
		if !m.Has(fd) && !emittedZeroFields[fd.FullName()] {
			continue
		}
		if !first {
			e.buf = append(e.buf, ',')
		}
		first = false
		e.buf = append(e.buf, '"')
		e.buf = append(e.buf, fd.JSONName()...)
		e.buf = append(e.buf, '"', ':')
		e.push(fd.JSONName())
		if err := e.field(fd, m.Get(fd)); err != nil {
			return err
		}
		e.pop()
	}
	return nil
}

func (e *encoder) field(fd protoreflect.FieldDescriptor, v protoreflect.Value) error {
	special := specialFields[fd.FullName()]
	switch {
	case fd.IsList():
		l := v.List()
		e.buf = append(e.buf, '[')
		for i := range l.Len() {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			e.push("[" + strconv.Itoa(i) + "]")
			if err := e.single(fd, special, l.Get(i)); err != nil {
				return err
			}
			e.pop()
		}
		e.buf = append(e.buf, ']')
	case fd.IsMap():
		mp := v.Map()
		keys := make([]protoreflect.MapKey, 0, mp.Len())
		mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
			keys = append(keys, k)
			return true
		})
		slices.SortFunc(keys, func(a, b protoreflect.MapKey) int { return strings.Compare(a.String(), b.String()) })
		e.buf = append(e.buf, '{')
		for i, k := range keys {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			ks := k.String()
			e.push("[" + ks + "]")
			if ks == "<<" && e.mergeKey != "" {
				ks = e.mergeKey
			}
			if err := e.str(ks); err != nil {
				return err
			}
			e.buf = append(e.buf, ':')
			if err := e.single(fd.MapValue(), special, mp.Get(k)); err != nil {
				return err
			}
			e.pop()
		}
		e.buf = append(e.buf, '}')
	default:
		return e.single(fd, special, v)
	}
	return nil
}

// str writes s as a JSON string, escaping as encoding/json does (including
// <, > and &) and also what YAML parsers refuse or read as line breaks (DEL,
// C1 controls, NEL, BOM, non-characters), so that EncodeYAML, which parses
// this JSON with a YAML parser, keeps every string intact.
func (e *encoder) str(s string) error {
	if !utf8.ValidString(s) {
		return e.errorf("string is not valid UTF-8")
	}
	const hex = "0123456789abcdef"
	b := append(e.buf, '"')
	start := 0 // s[start:i] is pending, to copy unchanged
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
			i++
			continue
		}
		r, size := rune(c), 1
		if c >= 0x80 {
			r, size = utf8.DecodeRuneInString(s[i:])
			if !(r <= 0x9f || r == 0x2028 || r == 0x2029 || r == 0xfeff || r == 0xfffe || r == 0xffff) {
				i += size
				continue
			}
		}
		b = append(b, s[start:i]...)
		switch r {
		case '"', '\\':
			b = append(b, '\\', byte(r))
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	e.buf = append(b, '"')
	return nil
}

// single writes one value: a singular field, a list element or a map value.
func (e *encoder) single(fd protoreflect.FieldDescriptor, special fieldKind, v protoreflect.Value) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		s := v.String()
		if special == intOrString && isCanonicalInt32(s) {
			e.buf = append(e.buf, s...)
			return nil
		}
		return e.str(s)
	case protoreflect.BoolKind:
		e.buf = strconv.AppendBool(e.buf, v.Bool())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		e.buf = strconv.AppendInt(e.buf, v.Int(), 10)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if special == resourceVersion {
			e.buf = append(e.buf, '"')
			e.buf = strconv.AppendUint(e.buf, v.Uint(), 10)
			e.buf = append(e.buf, '"')
		} else {
			e.buf = strconv.AppendUint(e.buf, v.Uint(), 10)
		}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return e.errorf("%v cannot be written as JSON", f)
		}
		bits := 64
		if fd.Kind() == protoreflect.FloatKind {
			bits = 32
		}
		e.buf = strconv.AppendFloat(e.buf, f, 'g', -1, bits)
	case protoreflect.BytesKind:
		e.buf = append(e.buf, '"')
		e.buf = base64.StdEncoding.AppendEncode(e.buf, v.Bytes())
		e.buf = append(e.buf, '"')
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return e.str(string(ev.Name()))
		}
		e.buf = strconv.AppendInt(e.buf, int64(v.Enum()), 10)
	case protoreflect.MessageKind, protoreflect.GroupKind:
		m := v.Message()
		if m.Descriptor().FullName() == timestampName {
			return e.timestamp(m)
		}
		e.buf = append(e.buf, '{')
		if err := e.fields(m, false); err != nil {
			return err
		}
		e.buf = append(e.buf, '}')
	}
	return nil
}

// Limits of google.protobuf.Timestamp: 0001-01-01 to 9999-12-31.
const (
	minTimestamp = -62135596800
	maxTimestamp = 253402300799
)

func (e *encoder) timestamp(m protoreflect.Message) error {
	fs := m.Descriptor().Fields()
	secs := m.Get(fs.ByName("seconds")).Int()
	nanos := m.Get(fs.ByName("nanos")).Int()
	if secs < minTimestamp || secs > maxTimestamp || nanos < 0 || nanos > 999999999 {
		return e.errorf("invalid timestamp (seconds %d, nanos %d)", secs, nanos)
	}
	e.buf = append(e.buf, '"')
	e.buf = time.Unix(secs, nanos).UTC().AppendFormat(e.buf, time.RFC3339Nano)
	e.buf = append(e.buf, '"')
	return nil
}

// isCanonicalInt32 reports whether s is an int32 written the way
// strconv.Itoa writes it, so that printing it as a number and reading it
// back yields s again.
func isCanonicalInt32(s string) bool {
	n, err := strconv.ParseInt(s, 10, 32)
	return err == nil && strconv.FormatInt(n, 10) == s
}
