package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/util/jsonpath"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// forever is what a negative --timeout means, as in kubectl: a week.
const forever = 168 * time.Hour

func newWaitCommand(o *Options) *cobra.Command {
	var forFlag string
	var sel waitSelection
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait (KIND NAME... | KIND/NAME... | KIND -l SELECTOR | KIND --all) --for=CONDITION [--timeout 30s]",
		Short: "Wait until objects meet a condition, or are deleted",
		Long: `Wait blocks until every object named or selected meets the condition given with --for, prints
"KIND/NAME condition met" for each one, and exits non-zero if --timeout passes first.

  --for=condition=TYPE[=STATUS]     status.conditions has an entry of type TYPE whose status is
                                    STATUS (default True); both compare in any case. TYPE may list
                                    several types, comma-separated: any of them. Pods have
                                    PodScheduled, Initialized, ContainersReady and Ready;
                                    Deployments Available and Progressing; Nodes Ready; Jobs
                                    Complete and Failed.
  --for=delete                      the object is gone. An object already gone counts as met.
  --for=create                      the object exists (named objects only).
  --for=jsonpath='{.a.b}'[=VALUE]   the value at that JSONPath equals VALUE, compared as text, or
                                    exists when no VALUE is given. The path must lead to one
                                    value: {.status.containerStatuses[0].ready} or
                                    {.status.conditions[?(@.type=="Ready")].status}, not a list.

A condition is not met while the object's controller has not yet seen its latest spec
(status.observedGeneration behind metadata.generation). The objects are waited for in turn
within one --timeout: 0 checks each once and fails at the first unmet, a negative value
waits for a week. Wait follows the objects with a watch, it does not poll.`,
		Example: `  skiff wait --for=condition=Available deployment/web --timeout 2m
  skiff wait --for=condition=Ready pod -l app=web
  skiff wait --for=condition=Ready=False node/w1
  skiff wait --for=jsonpath='{.status.phase}'=Running pod -l app=web
  skiff wait --for=condition=Complete job/migrate --timeout 10m
  skiff delete pod web-0 && skiff wait --for=delete pod/web-0
  skiff wait --for=create configmap/settings --timeout 1m`,
		ValidArgsFunction: completeKinds,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := runWait(o, forFlag, sel, timeout, args)
			var nf *notFoundError
			if errors.As(err, &nf) {
				// Worded as kubectl prints a server's NotFound.
				fmt.Fprintf(o.ErrOut, "Error from server (NotFound): %s\n", nf)
				return &ExitError{Code: 1}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&forFlag, "for", "", "the condition to wait for: delete, create, condition=TYPE[=STATUS] or jsonpath='{.field.path}'[=VALUE]")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long; 0 checks once, a negative value waits for a week")
	f.StringVarP(&sel.namespace, "namespace", "n", "", "namespace of the objects (default \"default\")")
	f.BoolVarP(&sel.allNamespaces, "all-namespaces", "A", false, "with -l or --all: select in every namespace")
	f.StringVarP(&sel.selector, "selector", "l", "", "wait for the objects of this label selector: a=b, a!=b, a in (x,y), !a")
	f.StringVar(&sel.fieldSelector, "field-selector", "", "wait for the objects of this field selector: metadata.name=x, spec.nodeName=w1")
	f.BoolVar(&sel.all, "all", false, "wait for every object of the kind in the namespace")
	return cmd
}

// waitCondition is a parsed --for.
type waitCondition struct {
	deleted, created bool
	// condition=TYPE[,TYPE...][=STATUS]
	types  []string
	status string
	// jsonpath={.a.b}[=VALUE]; anyValue: no VALUE, the field only has to exist.
	path     *jsonpath.JSONPath
	expr     string
	value    string
	anyValue bool
}

const waitForForms = "use --for=delete, --for=create, --for=condition=TYPE[=STATUS] (e.g. condition=Ready) or --for=jsonpath='{.field.path}'[=VALUE] (e.g. jsonpath='{.status.phase}'=Running)"

// parseWaitFor reads --for as kubectl does.
func parseWaitFor(s string) (waitCondition, error) {
	switch {
	case s == "":
		return waitCondition{}, errors.New("--for is required: " + waitForForms)
	case strings.EqualFold(s, "delete"):
		return waitCondition{deleted: true}, nil
	case strings.EqualFold(s, "create"):
		return waitCondition{created: true}, nil
	case strings.HasPrefix(s, "condition="):
		name, status, hasStatus := strings.Cut(strings.TrimPrefix(s, "condition="), "=")
		if !hasStatus {
			status = "True"
		}
		var types []string
		for _, t := range strings.Split(name, ",") {
			if t = strings.TrimSpace(t); t != "" {
				types = append(types, t)
			}
		}
		if len(types) == 0 {
			return waitCondition{}, fmt.Errorf("--for=%s: the condition type is missing, as in --for=condition=Ready", s)
		}
		if status == "" {
			return waitCondition{}, fmt.Errorf("--for=%s: the status after the second '=' is missing, as in --for=condition=Ready=False", s)
		}
		return waitCondition{types: types, status: status}, nil
	case strings.HasPrefix(s, "jsonpath="):
		return parseJSONPathWait(strings.TrimPrefix(s, "jsonpath="))
	}
	return waitCondition{}, fmt.Errorf("unrecognized condition: %q; %s", s, waitForForms)
}

func parseJSONPathWait(s string) (waitCondition, error) {
	parts := splitJSONPathInput(s)
	if len(parts) > 2 {
		return waitCondition{}, errors.New("jsonpath wait format must be --for=jsonpath='{.status.readyReplicas}'=3 or --for=jsonpath='{.status.readyReplicas}'")
	}
	expr := strings.TrimSpace(parts[0])
	if strings.Trim(expr, "{}. ") == "" {
		return waitCondition{}, errors.New("jsonpath expression cannot be empty: give a field path such as --for=jsonpath='{.status.phase}'=Running")
	}
	jp, err := parseJSONPath("--for=jsonpath", expr, true)
	if err != nil {
		return waitCondition{}, err
	}
	w := waitCondition{path: jp, expr: relaxedPath(expr), anyValue: len(parts) == 1}
	if !w.anyValue {
		w.value = strings.Trim(parts[1], `'"`)
		if w.value == "" {
			return waitCondition{}, errors.New("jsonpath wait has to have a value after equal sign, like --for=jsonpath='{.status.readyReplicas}'=3")
		}
	}
	return w, nil
}

// splitJSONPathInput splits on each single '=' and keeps a doubled "=="
// as it is, as kubectl does (a filter's comparison, which is then
// reported as unsupported).
func splitJSONPathInput(s string) []string {
	var out []string
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '=' {
			b.WriteString("==")
			i++
			continue
		}
		out = append(out, b.String())
		b.Reset()
	}
	return append(out, b.String())
}

// met reports whether obj meets a condition or jsonpath wait. It reads the
// object's JSON form, as kubectl reads an unstructured object, so every
// kind works the same way.
func (w waitCondition) met(obj *pb.Object) (bool, error) {
	doc, err := objectDoc(obj)
	if err != nil {
		return false, err
	}
	if w.path != nil {
		res, err := w.path.FindResults(doc)
		if err != nil {
			return false, fmt.Errorf("jsonpath %s: %v", w.expr, err)
		}
		var vals []any
		for _, set := range res {
			for _, r := range set {
				vals = append(vals, r.Interface())
			}
		}
		switch {
		case len(vals) == 0:
			return false, nil
		case len(vals) > 1:
			return false, fmt.Errorf("jsonpath %s gives %d values, not one: give the path of a single field", w.expr, len(vals))
		}
		switch vals[0].(type) {
		case map[string]any, []any:
			return false, fmt.Errorf("jsonpath %s leads to a nested object or list, which is not supported: give the path of a single field", w.expr)
		}
		return w.anyValue || strings.TrimSpace(fmt.Sprint(vals[0])) == strings.TrimSpace(w.value), nil
	}
	conds, _ := lookupField(doc, "status", "conditions")
	list, _ := conds.([]any)
	for _, c := range list {
		cond, _ := c.(map[string]any)
		typ, _ := cond["type"].(string)
		status, ok := cond["status"].(string)
		if !ok || !containsFold(w.types, typ) {
			continue
		}
		// A status from before the latest spec says nothing about it.
		if gen, ok := int64Field(doc, "metadata", "generation"); ok {
			observed, ok := int64Field(cond, "observedGeneration")
			if !ok {
				observed, ok = int64Field(doc, "status", "observedGeneration")
			}
			if ok && observed < gen {
				return false, nil
			}
		}
		return strings.EqualFold(status, w.status), nil
	}
	return false, nil
}

func lookupField(doc map[string]any, path ...string) (any, bool) {
	var v any = doc
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[p]; !ok {
			return nil, false
		}
	}
	return v, true
}

func int64Field(doc map[string]any, path ...string) (int64, bool) {
	v, _ := lookupField(doc, path...)
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := n.Int64()
	return i, err == nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// waitSelection is how the objects to wait for are chosen besides names.
type waitSelection struct {
	namespace     string
	allNamespaces bool
	selector      string
	fieldSelector string
	all           bool
}

func (s waitSelection) selecting() bool {
	return s.selector != "" || s.fieldSelector != "" || s.all
}

// waitTargets checks the forms kubectl wait accepts: names, or a kind with
// a selector or --all, never both.
func waitTargets(args []string, s waitSelection) ([]target, error) {
	if len(args) == 0 {
		return nil, errors.New("name what to wait for: KIND NAME..., KIND/NAME..., or KIND with -l SELECTOR or --all")
	}
	targets, err := parseTargets(args)
	if err != nil {
		return nil, err
	}
	if s.all && (s.selector != "" || s.fieldSelector != "") {
		return nil, errors.New("--all selects every object of the kind: drop it to wait for those of -l or --field-selector")
	}
	for _, t := range targets {
		switch {
		case s.selecting() && len(t.names) > 0:
			return nil, errors.New("give either names or a selection (-l, --field-selector, --all), not both")
		case !s.selecting() && len(t.names) == 0:
			kind := strings.ToLower(t.kind.Kind)
			return nil, fmt.Errorf("name the %s to wait for (skiff wait %s NAME or %s/NAME), or select them with -l SELECTOR or --all", t.kind.Plural, kind, kind)
		}
	}
	if s.allNamespaces && !s.selecting() {
		return nil, errors.New("a resource cannot be retrieved by name across all namespaces: drop -A and give -n NAMESPACE, or select with -l or --all")
	}
	return targets, nil
}

// notFoundError is a named object that does not exist, for a wait that
// needs it to.
type notFoundError struct{ plural, name string }

func (e *notFoundError) Error() string { return fmt.Sprintf("%s %q not found", e.plural, e.name) }

func runWait(o *Options, forFlag string, sel waitSelection, timeout time.Duration, args []string) error {
	cond, err := parseWaitFor(forFlag)
	if err != nil {
		return err
	}
	targets, err := waitTargets(args, sel)
	if err != nil {
		return err
	}
	if cond.created && sel.selecting() {
		return errors.New("--for=create waits for named objects: name them (KIND/NAME) instead of selecting with -l, --field-selector or --all")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := interruptible()
	defer stop()
	var cancel context.CancelFunc
	if timeout == 0 {
		ctx, cancel = context.WithTimeout(ctx, o.Timeout) // one read of each
	} else {
		ctx, cancel = withWaitTimeout(ctx, timeout)
	}
	defer cancel()

	w := &waiter{c: c, cond: cond, once: timeout == 0, out: o.Out}
	matched := 0
	for _, t := range targets {
		ns := orDefault(sel.namespace, "default")
		if !t.kind.Namespaced {
			ns = ""
		}
		for _, name := range t.names {
			matched++
			if err := w.wait(ctx, t.kind, ns, name, nil, 0); err != nil {
				return err
			}
		}
		if len(t.names) > 0 {
			continue
		}
		if sel.allNamespaces {
			ns = ""
		}
		items, rv, err := c.List(ctx, t.kind.Kind, client.ListOptions{Namespace: ns, LabelSelector: sel.selector, FieldSelector: sel.fieldSelector})
		if err != nil {
			return waitFailed(ctx, err, t.kind.Plural)
		}
		for _, it := range items {
			matched++
			if err := w.wait(ctx, t.kind, it.Meta().GetNamespace(), it.Meta().GetName(), it, rv); err != nil {
				return err
			}
		}
	}
	if matched == 0 && !cond.deleted {
		return errors.New("no matching resources found")
	}
	return nil
}

// errWaitTimedOut ends a wait's context when --timeout passes.
var errWaitTimedOut = errors.New("--timeout passed")

// withWaitTimeout returns ctx ended after d (a week if d is negative) with
// errWaitTimedOut as its cause. It is not a deadline on purpose: a deadline
// travels with every request, and a master whose copy of it expires first
// answers DeadlineExceeded while this process's context is still live, which
// would read as a failure of the cluster rather than a timeout.
func withWaitTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d < 0 {
		d = forever
	}
	ctx, cancel := context.WithCancelCause(ctx)
	t := time.AfterFunc(d, func() { cancel(errWaitTimedOut) })
	return ctx, func() { t.Stop(); cancel(nil) }
}

// waiter waits for one object at a time.
type waiter struct {
	c    *client.Client
	cond waitCondition
	once bool
	out  io.Writer
}

// read returns the object (nil if it does not exist) and the
// resourceVersion to watch it from.
func (w *waiter) read(ctx context.Context, kind pb.KindInfo, ns, name string) (*pb.Object, uint64, error) {
	items, rv, err := w.c.List(ctx, kind.Kind, client.ListOptions{Namespace: ns, FieldSelector: "metadata.name=" + name})
	if err != nil || len(items) == 0 {
		return nil, rv, err
	}
	return items[0], rv, nil
}

// wait returns once the object meets the condition, printing so, or with
// the reason it will not. obj and rv are the object as listed and the
// list's resourceVersion; with obj nil, wait reads it first.
func (w *waiter) wait(ctx context.Context, kind pb.KindInfo, ns, name string, obj *pb.Object, rv uint64) error {
	where := kind.Plural + "/" + name
	done := func() error {
		fmt.Fprintf(w.out, "%s/%s condition met\n", strings.ToLower(kind.Kind), name)
		return nil
	}
	if obj == nil {
		var err error
		if obj, rv, err = w.read(ctx, kind, ns, name); err != nil {
			return waitFailed(ctx, err, where)
		}
		switch {
		case obj != nil, w.cond.created:
		case w.cond.deleted:
			return nil // gone already: nothing to report, as kubectl
		default:
			return &notFoundError{plural: kind.Plural, name: name}
		}
	}
	var uid string
	if obj != nil {
		uid = obj.Meta().GetUid()
	}
	// check tells whether the object as last read (nil: absent) meets
	// the condition.
	check := func(obj *pb.Object) (bool, error) {
		if w.cond.deleted {
			// Another object of the same name means this one went.
			return obj == nil || obj.Meta().GetUid() != uid, nil
		}
		if w.cond.created {
			return obj != nil, nil
		}
		if obj == nil {
			return false, nil // deleted meanwhile: it may come back
		}
		return w.cond.met(obj)
	}
	if ok, err := check(obj); err != nil || ok {
		if err != nil {
			return err
		}
		return done()
	}
	if w.once {
		return fmt.Errorf("condition not met for %s", where)
	}
	var cerr error
	err := followObject(ctx, w.c, kind.Kind, ns, name, rv, func(obj *pb.Object) (bool, error) {
		var ok bool
		ok, cerr = check(obj)
		return ok, cerr
	})
	switch {
	case cerr != nil:
		return cerr
	case err != nil:
		return waitFailed(ctx, err, where)
	}
	return done()
}

// followObject follows one object by name from resourceVersion rv: it calls
// fn with every state the object takes (nil once it is deleted) until fn
// reports done or fails, and returns fn's error. When the watch's history is
// gone it reads the object again, by a list so that a deleted one reads as
// nil, calls fn with it and watches on from the list. Errors of the watch
// and the read are returned as they are, for the caller to word.
func followObject(ctx context.Context, c *client.Client, kind, ns, name string, rv uint64, fn func(obj *pb.Object) (done bool, err error)) error {
	byName := "metadata.name=" + name
	for {
		w, err := c.Watch(ctx, kind, client.WatchOptions{Namespace: ns, FieldSelector: byName, ResourceVersion: rv, BookmarkSeconds: 10})
		if err == nil {
			for {
				var ev *pb.WatchEvent
				if ev, err = w.Next(ctx); err != nil {
					break
				}
				obj := ev.GetObject()
				if ev.GetType() == "DELETED" {
					obj = nil
				}
				if done, ferr := fn(obj); ferr != nil || done {
					w.Close()
					return ferr
				}
			}
			w.Close()
		}
		if ctx.Err() != nil || !errors.Is(err, client.ErrExpired) {
			return err
		}
		items, listRV, err := c.List(ctx, kind, client.ListOptions{Namespace: ns, FieldSelector: byName})
		if err != nil {
			return err
		}
		var obj *pb.Object
		if len(items) > 0 {
			obj = items[0]
		}
		if done, err := fn(obj); err != nil || done {
			return err
		}
		rv = listRV
	}
}

// waitFailed words the error a wait on where ended with: kubectl's timeout
// message when --timeout passed, whatever the call in progress returned.
func waitFailed(ctx context.Context, err error, where string) error {
	switch {
	case errors.Is(context.Cause(ctx), errWaitTimedOut):
		return fmt.Errorf("timed out waiting for the condition on %s", where)
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("interrupted while waiting for the condition on %s", where)
	}
	return apiError(err)
}
