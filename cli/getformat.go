package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"text/tabwriter"

	"k8s.io/client-go/util/jsonpath"

	pb "github.com/skiff-sh/skiff/proto"
)

// The output formats of get beyond the tables and documents: -o
// jsonpath=TEMPLATE and -o custom-columns=HEADER:PATH,..., --sort-by, and
// the label columns of tables (--show-labels, -L), as kubectl has them.
// Paths are Kubernetes' JSONPath (client-go's), over the objects as -o json
// prints them.

// outputFormat is a parsed -o value.
type outputFormat struct {
	// name is "", wide, yaml, json, name, jsonpath or custom-columns.
	name     string
	template *jsonpath.JSONPath // jsonpath
	columns  []customColumn     // custom-columns
}

type customColumn struct {
	header string
	path   *jsonpath.JSONPath
}

const outputFormats = "wide, yaml, json, name, jsonpath=TEMPLATE or custom-columns=HEADER:PATH[,HEADER:PATH...]"

// parseOutput parses -o.
func parseOutput(s string) (outputFormat, error) {
	name, arg, hasArg := strings.Cut(s, "=")
	switch {
	case !hasArg && (name == "" || name == "wide" || name == "yaml" || name == "json" || name == "name"):
		return outputFormat{name: name}, nil
	case name == "jsonpath":
		if arg == "" {
			return outputFormat{}, fmt.Errorf("--output jsonpath= needs a template, e.g. -o jsonpath='{.items[*].metadata.name}'")
		}
		jp, err := parseJSONPath("--output", arg, false)
		if err != nil {
			return outputFormat{}, err
		}
		return outputFormat{name: name, template: jp}, nil
	case name == "custom-columns":
		var cols []customColumn
		for _, spec := range strings.Split(arg, ",") {
			header, path, ok := strings.Cut(spec, ":")
			if !ok || header == "" || path == "" {
				return outputFormat{}, fmt.Errorf("--output custom-columns: %q is not HEADER:PATH, e.g. -o custom-columns=NAME:.metadata.name,NODE:.spec.nodeName", spec)
			}
			jp, err := parseJSONPath("--output custom-columns "+header, path, true)
			if err != nil {
				return outputFormat{}, err
			}
			cols = append(cols, customColumn{header: header, path: jp})
		}
		return outputFormat{name: name, columns: cols}, nil
	}
	return outputFormat{}, fmt.Errorf("--output %q: use %s", s, outputFormats)
}

// parseJSONPath parses a template; relaxed, it also takes a bare path
// (.metadata.name or metadata.name), as kubectl's --sort-by and
// custom-columns do.
func parseJSONPath(flag, expr string, relaxed bool) (*jsonpath.JSONPath, error) {
	if relaxed {
		expr = relaxedPath(expr)
	}
	jp := jsonpath.New(flag).AllowMissingKeys(true)
	if err := jp.Parse(expr); err != nil {
		return nil, fmt.Errorf("%s %q: %v", flag, expr, err)
	}
	return jp, nil
}

// relaxedPath turns metadata.name, .metadata.name or {metadata.name} into
// {.metadata.name}.
func relaxedPath(expr string) string {
	expr = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(expr), "{"), "}")
	if !strings.HasPrefix(expr, ".") {
		expr = "." + expr
	}
	return "{" + expr + "}"
}

// objectDoc is obj as -o json prints it, decoded as kubectl reads an
// unstructured object (numbers as json.Number), so that every kind is read
// the same way.
func objectDoc(obj *pb.Object) (map[string]any, error) {
	data, err := pb.EncodeJSON(obj)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	return doc, d.Decode(&doc)
}

// printJSONPath executes the template on a single object (get KIND NAME)
// or on a List of them, as kubectl does.
func printJSONPath(w io.Writer, jp *jsonpath.JSONPath, objs []*pb.Object, single bool) error {
	items := make([]any, 0, len(objs))
	for _, o := range objs {
		v, err := objectDoc(o)
		if err != nil {
			return err
		}
		items = append(items, v)
	}
	var data any = map[string]any{"apiVersion": "v1", "kind": "List", "items": items}
	if single && len(items) == 1 {
		data = items[0]
	}
	if err := jp.Execute(w, data); err != nil {
		return fmt.Errorf("--output jsonpath: %v", err)
	}
	return nil
}

// printCustomColumns prints one row per object; a path that finds nothing
// prints <none>.
func printCustomColumns(w io.Writer, cols []customColumn, objs []*pb.Object, header bool) error {
	tw := tabwriter.NewWriter(w, 3, 0, 3, ' ', 0)
	if header {
		var h []string
		for _, c := range cols {
			h = append(h, c.header)
		}
		fmt.Fprintln(tw, strings.Join(h, "\t"))
	}
	for _, o := range objs {
		v, err := objectDoc(o)
		if err != nil {
			return err
		}
		var row []string
		for _, c := range cols {
			vals, err := c.path.FindResults(v)
			if err != nil {
				return fmt.Errorf("--output custom-columns %s: %v", c.header, err)
			}
			var parts []string
			for _, set := range vals {
				for _, r := range set {
					parts = append(parts, fmt.Sprint(r.Interface()))
				}
			}
			if len(parts) == 0 {
				parts = []string{"<none>"}
			}
			row = append(row, strings.Join(parts, ","))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// sortObjects orders objs by the value at path (--sort-by): numbers by
// value, everything else as text (timestamps are RFC 3339, so text order
// is time order); objects without the field first, as kubectl.
func sortObjects(objs []*pb.Object, path string) error {
	jp, err := parseJSONPath("--sort-by", path, true)
	if err != nil {
		return err
	}
	type keyed struct {
		obj     *pb.Object
		missing bool
		num     json.Number
		isNum   bool
		text    string
	}
	ks := make([]keyed, len(objs))
	for i, o := range objs {
		v, err := objectDoc(o)
		if err != nil {
			return err
		}
		ks[i].obj = o
		res, err := jp.FindResults(v)
		if err != nil {
			return fmt.Errorf("--sort-by %q: %v", path, err)
		}
		if len(res) == 0 || len(res[0]) == 0 {
			ks[i].missing = true
			continue
		}
		if len(res) > 1 || len(res[0]) > 1 {
			return fmt.Errorf("--sort-by %q finds more than one value in %s: sort by a single field", path, objectRef(o))
		}
		val := res[0][0]
		for val.Kind() == reflect.Interface && !val.IsNil() {
			val = val.Elem()
		}
		if n, ok := val.Interface().(json.Number); ok {
			ks[i].num, ks[i].isNum = n, true
			continue
		}
		ks[i].text = fmt.Sprint(val.Interface())
	}
	sort.SliceStable(ks, func(a, b int) bool {
		x, y := ks[a], ks[b]
		if x.missing || y.missing {
			return x.missing && !y.missing
		}
		if x.isNum && y.isNum {
			fx, _ := x.num.Float64()
			fy, _ := y.num.Float64()
			return fx < fy
		}
		return x.text < y.text
	})
	for i := range ks {
		objs[i] = ks[i].obj
	}
	return nil
}

// labelColumn is the header of -L KEY: the key's last segment in capitals,
// as kubectl prints it.
func labelColumn(key string) string {
	if i := strings.LastIndex(key, "/"); i >= 0 {
		key = key[i+1:]
	}
	return strings.ToUpper(key)
}
