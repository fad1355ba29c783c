package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/validate/content"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// metaMap is what label and annotate edit: one string map of an object's
// metadata, with the words the commands print and the rules Kubernetes
// checks its entries by.
type metaMap struct {
	noun    string // label, annotation
	plural  string // labels, annotations
	done    string // labeled, annotated
	removed string // unlabeled; "" when removing has no word of its own
	get     func(*pb.ObjectMeta) map[string]string
	put     func(*pb.ObjectMeta, map[string]string)
	// checkKey and checkValue return Kubernetes' messages for a key or
	// value it would refuse; checkValue nil takes any value.
	checkKey   func(string) []string
	checkValue func(string) []string
	// maxTotal, when not 0, bounds the bytes of all keys and values
	// together.
	maxTotal int
}

var labelMap = metaMap{
	noun: "label", plural: "labels", done: "labeled", removed: "unlabeled",
	get:        func(m *pb.ObjectMeta) map[string]string { return m.GetLabels() },
	put:        func(m *pb.ObjectMeta, v map[string]string) { m.Labels = v },
	checkKey:   content.IsLabelKey,
	checkValue: content.IsLabelValue,
}

var annotationMap = metaMap{
	noun: "annotation", plural: "annotations", done: "annotated",
	get: func(m *pb.ObjectMeta) map[string]string { return m.GetAnnotations() },
	put: func(m *pb.ObjectMeta, v map[string]string) { m.Annotations = v },
	// Kubernetes checks annotation keys as label keys, in lower case.
	checkKey: func(k string) []string { return content.IsLabelKey(strings.ToLower(k)) },
	maxTotal: pb.TotalAnnotationSizeLimit,
}

// mapEdit is the change one label or annotate command makes to each
// object: keys to set and keys to remove.
type mapEdit struct {
	set    map[string]string
	remove []string
}

// splitArgs separates the arguments naming objects from the changes that
// follow them; isChange tells a change from a name, and every change
// comes after every name, as kubectl has it.
func splitArgs(args []string, noun string, isChange func(string) bool) (objects, changes []string, err error) {
	for _, a := range args {
		switch {
		case isChange(a):
			changes = append(changes, a)
		case len(changes) > 0:
			return nil, nil, fmt.Errorf("%q: name every object before the %s changes", a, noun)
		default:
			objects = append(objects, a)
		}
	}
	return objects, changes, nil
}

// isMapChange tells KEY=VALUE and KEY- from an object's name.
func isMapChange(a string) bool {
	return strings.Contains(a, "=") || strings.HasSuffix(a, "-")
}

// parseMapEdit reads KEY=VALUE and KEY- arguments and checks every key and
// value by Kubernetes' rules, so that a bad one is refused before anything
// is written.
func parseMapEdit(f metaMap, args []string) (mapEdit, error) {
	e := mapEdit{set: map[string]string{}}
	var errs []string
	checkKey := func(k string) bool {
		if msgs := f.checkKey(k); len(msgs) > 0 {
			errs = append(errs, fmt.Sprintf("invalid %s key %q: %s", f.noun, k, strings.Join(msgs, "; ")))
			return false
		}
		return true
	}
	for _, a := range args {
		k, v, isSet := strings.Cut(a, "=")
		if !isSet {
			k = strings.TrimSuffix(a, "-")
			if checkKey(k) && !slices.Contains(e.remove, k) {
				e.remove = append(e.remove, k)
			}
			continue
		}
		if !checkKey(k) {
			continue
		}
		if f.checkValue != nil {
			if msgs := f.checkValue(v); len(msgs) > 0 {
				errs = append(errs, fmt.Sprintf("invalid %s value %q for key %q: %s", f.noun, v, k, strings.Join(msgs, "; ")))
				continue
			}
		}
		e.set[k] = v // the last of several values for one key wins
	}
	for _, k := range e.remove {
		if _, ok := e.set[k]; ok {
			errs = append(errs, fmt.Sprintf("%q is both set and removed: can not both modify and remove a %s in the same command", k, f.noun))
		}
	}
	if f.maxTotal > 0 {
		if n := mapBytes(e.set); n > f.maxTotal {
			errs = append(errs, fmt.Sprintf("the %s given take %d bytes, more than the %d bytes all of an object's %s may take together", f.plural, n, f.maxTotal, f.plural))
		}
	}
	if len(errs) > 0 {
		return mapEdit{}, errors.New(strings.Join(errs, "\n"))
	}
	if len(e.set) == 0 && len(e.remove) == 0 {
		return mapEdit{}, fmt.Errorf("at least one %s update is required: KEY=VALUE to set, KEY- to remove", f.noun)
	}
	return e, nil
}

func mapBytes(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}

// applyMapEdit makes e's changes to the map f names in obj's metadata and
// returns the word to print for the object ("labeled", "unlabeled", "not
// labeled") and whether anything changed. Without overwrite, giving a key
// that has another value is an error, as kubectl makes it; removing a key
// that is not there is not.
func applyMapEdit(f metaMap, obj *pb.Object, e mapEdit, overwrite bool) (string, bool, error) {
	m := obj.Meta()
	cur := f.get(m)
	if !overwrite {
		var errs []string
		for _, k := range sortedKeys(e.set) {
			if old, ok := cur[k]; ok && old != e.set[k] {
				errs = append(errs, fmt.Sprintf("'%s' already has a value (%s), and --overwrite is false", k, old))
			}
		}
		if len(errs) > 0 {
			return "", false, errors.New(strings.Join(errs, "; "))
		}
	}
	next := make(map[string]string, len(cur)+len(e.set))
	for k, v := range cur {
		next[k] = v
	}
	set, removed := false, false
	for k, v := range e.set {
		if old, ok := cur[k]; !ok || old != v {
			next[k] = v
			set = true
		}
	}
	for _, k := range e.remove {
		if _, ok := next[k]; ok {
			delete(next, k)
			removed = true
		}
	}
	if !set && !removed {
		return "not " + f.done, false, nil
	}
	if f.maxTotal > 0 {
		if n := mapBytes(next); n > f.maxTotal {
			return "", false, fmt.Errorf("its %s would take %d bytes, more than the %d bytes they may take together: remove some, or keep large data in a ConfigMap",
				f.plural, n, f.maxTotal)
		}
	}
	if len(next) == 0 {
		next = nil
	}
	f.put(m, next)
	if !set && f.removed != "" {
		return f.removed, true, nil
	}
	return f.done, true, nil
}

// selection is how label, annotate and taint pick their objects: by name,
// or every object of the kinds named that matches -l, or --all of them.
type selection struct {
	namespace     string
	allNamespaces bool
	selector      string
	all           bool
}

func (s *selection) addFlags(cmd *cobra.Command, namespaced bool) {
	f := cmd.Flags()
	all := "select every object of the kind in the cluster"
	if namespaced {
		f.StringVarP(&s.namespace, "namespace", "n", "", "namespace of the objects (default \"default\")")
		f.BoolVarP(&s.allNamespaces, "all-namespaces", "A", false, "with -l or --all: select in every namespace")
		all = "select every object of the kind in the namespace (every namespace with -A)"
	}
	f.StringVarP(&s.selector, "selector", "l", "", "select every object of the kind whose labels match: a=b, a!=b, a in (x,y), !a")
	f.BoolVar(&s.all, "all", false, all)
}

// objectKey names one object.
type objectKey struct {
	kind      pb.KindInfo
	namespace string
	name      string
}

// where says where the object was looked for: " in namespace NS", or
// nothing for a cluster-scoped one.
func (k objectKey) where() string {
	if k.namespace == "" {
		return ""
	}
	return " in namespace " + k.namespace
}

// notFound words a NotFound error about the object as get does, with the
// namespace it was looked for in; other errors are returned as they are.
func (k objectKey) notFound(err error) error {
	if status.Code(err) != codes.NotFound {
		return err
	}
	return fmt.Errorf("%s %q not found%s", strings.ToLower(k.kind.Kind), k.name, k.where())
}

// plan reads the arguments naming objects: the objects named, or the kinds
// whose matching objects are to be listed (with -l or --all).
func (s *selection) plan(args []string, verb string) (named []objectKey, kinds []pb.KindInfo, err error) {
	usage := fmt.Sprintf("skiff %s KIND NAME... or KIND/NAME..., or KIND with -l SELECTOR or --all", verb)
	if len(args) == 0 {
		return nil, nil, fmt.Errorf("name the objects to %s: %s", verb, usage)
	}
	if s.all && s.selector != "" {
		return nil, nil, errors.New("give -l or --all, not both")
	}
	targets, err := parseTargets(args)
	if err != nil {
		return nil, nil, err
	}
	selecting := s.all || s.selector != ""
	if s.allNamespaces && !selecting {
		return nil, nil, errors.New("--all-namespaces selects with -l or --all: name no objects, or drop -A")
	}
	for _, t := range targets {
		switch {
		case selecting && len(t.names) > 0:
			return nil, nil, fmt.Errorf("give names or -l/--all, not both: %s", usage)
		case selecting:
			kinds = append(kinds, t.kind)
		case len(t.names) == 0:
			return nil, nil, fmt.Errorf("no %s named: %s", t.kind.Plural, usage)
		}
		ns := ""
		if t.kind.Namespaced {
			ns = orDefault(s.namespace, "default")
		}
		for _, n := range t.names {
			named = append(named, objectKey{kind: t.kind, namespace: ns, name: n})
		}
	}
	return named, kinds, nil
}

// resolve returns the objects the arguments and flags select: the ones
// named (whether they exist is found out when they are read), or those of
// the kinds listed that match.
func (s *selection) resolve(ctx context.Context, c *client.Client, args []string, verb string) ([]objectKey, error) {
	named, kinds, err := s.plan(args, verb)
	if err != nil || len(kinds) == 0 {
		return named, err
	}
	var out []objectKey
	for _, k := range kinds {
		ns := ""
		if k.Namespaced && !s.allNamespaces {
			ns = orDefault(s.namespace, "default")
		}
		items, _, err := c.List(ctx, k.Kind, client.ListOptions{Namespace: ns, LabelSelector: s.selector})
		if err != nil {
			return nil, apiError(err)
		}
		for _, it := range items {
			out = append(out, objectKey{kind: k, namespace: it.Meta().GetNamespace(), name: it.Meta().GetName()})
		}
	}
	if len(out) == 0 {
		where := "in namespace " + orDefault(s.namespace, "default")
		if s.allNamespaces || !kinds[0].Namespaced {
			where = "in the cluster"
		}
		what := "no " + kinds[0].Plural
		if s.selector != "" {
			what += " match -l " + s.selector
		}
		return nil, fmt.Errorf("%s %s: nothing to %s", what, where, verb)
	}
	return out, nil
}

// changeEach reads, changes and writes each object in turn with
// mutateObject (a concurrent change is retried, not lost) and prints a
// line per object: its ref and the word change returns. With one object
// its error is returned as is; with several, each failure is printed and
// the rest go on.
func changeEach(ctx context.Context, o *Options, c *client.Client, keys []objectKey, what string, change func(obj *pb.Object) (word string, changed bool, err error)) error {
	failed := 0
	for _, k := range keys {
		var word string
		obj, _, err := mutateObject(ctx, c, k.kind.Kind, k.namespace, k.name, func(obj *pb.Object) (bool, error) {
			var changed bool
			var err error
			word, changed, err = change(obj)
			return changed, err
		})
		if err != nil {
			if len(keys) == 1 {
				return apiError(k.notFound(err))
			}
			failed++
			msg := errMessage(err)
			if status.Code(err) == codes.NotFound {
				msg = "not found" + k.where()
			}
			fmt.Fprintf(o.ErrOut, "error: %s/%s: %s\n", strings.ToLower(k.kind.Kind), k.name, msg)
			continue
		}
		fmt.Fprintf(o.Out, "%s %s\n", objectRef(obj), word)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d objects were not %s", failed, len(keys), what)
	}
	return nil
}

// listMap prints the map f names of each object, one key=value a line; for
// several objects each under a heading, as kubectl label --list does.
func listMap(ctx context.Context, o *Options, c *client.Client, f metaMap, keys []objectKey) error {
	for _, k := range keys {
		obj, err := c.Get(ctx, k.kind.Kind, k.namespace, k.name, client.ReadOptions{})
		if err != nil {
			return apiError(k.notFound(err))
		}
		indent := ""
		if len(keys) > 1 {
			fmt.Fprintf(o.Out, "Listing %s for %s:\n", f.plural, objectRef(obj))
			indent = " "
		}
		m := f.get(obj.Meta())
		for _, key := range sortedKeys(m) {
			fmt.Fprintf(o.Out, "%s%s=%s\n", indent, key, m[key])
		}
	}
	return nil
}

func newLabelCommand(o *Options) *cobra.Command {
	return newMapCommand(o, labelMap, `label (KIND NAME... | KIND/NAME... | KIND -l SELECTOR | KIND --all) KEY=VALUE... KEY-...`,
		"Set or remove labels of objects",
		`Label sets labels (KEY=VALUE) and removes them (KEY-) on objects of any kind, namespaced or not.

  * A key is a name of at most 63 characters (letters, digits, '-', '_', '.', beginning and ending
    with a letter or digit), optionally after a DNS subdomain prefix and '/' (example.com/tier).
  * A value is empty or follows the same rules as the name.
  * Changing the value of an existing label needs --overwrite; removing one that is not there is
    not an error.

Every argument is checked before anything is written. Each object is read, changed and written
back with its resourceVersion, and read again if someone changed it in between, so no concurrent
change is lost. An object whose labels already are what was asked is not written ("not labeled").`,
		`  skiff label pods web-7d9f-abcde tier=frontend
  skiff label configmap/settings app=web team=payments
  skiff label --overwrite deployment web tier=backend
  skiff label pods -l app=web canary=true
  skiff label pods --all -n demo release=2
  skiff label nodes w1 disk=ssd          # then nodeSelector: {disk: ssd}
  skiff label configmap settings team-   # remove the label team
  skiff label configmap settings --list`)
}

func newAnnotateCommand(o *Options) *cobra.Command {
	return newMapCommand(o, annotationMap, `annotate (KIND NAME... | KIND/NAME... | KIND -l SELECTOR | KIND --all) KEY=VALUE... KEY-...`,
		"Set or remove annotations of objects",
		`Annotate sets annotations (KEY=VALUE) and removes them (KEY-) on objects of any kind. Annotations
hold data for people and tools that is not used to select objects: values may be any text
(JSON, several lines, ...), while keys follow the rules of label keys. All of an object's
annotations together may take at most 256 KiB, as in Kubernetes.

Changing the value of an existing annotation needs --overwrite; removing one that is not there is
not an error. Every argument is checked before anything is written, and a concurrent change to an
object is retried, not lost.`,
		`  skiff annotate pods web-7d9f-abcde description='my frontend'
  skiff annotate --overwrite deployment/web kubernetes.io/change-cause='image v2: faster start'
  skiff annotate configmaps -l app=web owner=team-payments@example.com
  skiff annotate pods web-7d9f-abcde description-     # remove it
  skiff annotate deployment web --list`)
}

// newMapCommand is label's and annotate's command: they differ only in the
// map they change.
func newMapCommand(o *Options, f metaMap, use, short, long, example string) *cobra.Command {
	var sel selection
	var overwrite, list bool
	cmd := &cobra.Command{
		Use:               use,
		Short:             short,
		Long:              long,
		Example:           example,
		ValidArgsFunction: completeKinds,
		RunE: func(cmd *cobra.Command, args []string) error {
			verb := strings.Fields(cmd.Use)[0]
			objects, changes, err := splitArgs(args, f.noun, isMapChange)
			if err != nil {
				return err
			}
			var edit mapEdit
			switch {
			case list && len(changes) > 0:
				return fmt.Errorf("--list shows %s; give it no KEY=VALUE or KEY- arguments", f.plural)
			case !list:
				if edit, err = parseMapEdit(f, changes); err != nil {
					return err
				}
			}
			if _, _, err := sel.plan(objects, verb); err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			keys, err := sel.resolve(ctx, c, objects, verb)
			if err != nil {
				return err
			}
			if list {
				return listMap(ctx, o, c, f, keys)
			}
			return changeEach(ctx, o, c, keys, f.done, func(obj *pb.Object) (string, bool, error) {
				return applyMapEdit(f, obj, edit, overwrite)
			})
		},
	}
	sel.addFlags(cmd, true)
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "allow changing the value of an existing "+f.noun)
	cmd.Flags().BoolVar(&list, "list", false, "print the objects' "+f.plural+", one KEY=VALUE a line, and change nothing")
	return cmd
}
