package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// envEdit is the change one set env command makes to each container it
// selects: variables to set, in the order given, and names to remove.
type envEdit struct {
	set    []*pb.EnvVar
	remove []string
}

func (e envEdit) empty() bool { return len(e.set) == 0 && len(e.remove) == 0 }

// isEnvChange tells KEY=VALUE, KEY- and "-" (read KEY=VALUE lines from
// standard input) from an object's name.
func isEnvChange(a string) bool {
	return strings.Contains(a, "=") || strings.HasSuffix(a, "-")
}

// checkEnvName returns kubectl's complaint about a variable name it would
// not send, nil for a good one. kubectl checks names given on the command
// line by the C-identifier-like rule (letters, digits, '_', '-', '.', not
// starting with a digit), stricter than the API servers' (any printable
// character but '=').
func checkEnvName(name string) error {
	if msgs := validation.IsEnvVarName(name); len(msgs) > 0 {
		return fmt.Errorf("%q is not a valid key name: %s", name, strings.Join(msgs, "; "))
	}
	return nil
}

// parseEnvChanges reads KEY=VALUE and KEY- arguments, and "-" for
// KEY=VALUE lines from in (text after '#' ignored, as kubectl reads them).
// Every name is checked before anything is written; a variable both set
// and removed is an error, as in kubectl.
func parseEnvChanges(args []string, in io.Reader) (envEdit, error) {
	var e envEdit
	var errs []string
	set := func(spec string) {
		name, value, _ := strings.Cut(spec, "=")
		if err := checkEnvName(name); err != nil {
			errs = append(errs, err.Error())
			return
		}
		e.set = append(e.set, &pb.EnvVar{Name: name, Value: value})
	}
	usedStdin := false
	for _, a := range args {
		switch {
		case a == "-":
			if usedStdin {
				continue
			}
			usedStdin = true
			if in == nil {
				errs = append(errs, `"-" reads KEY=VALUE lines from standard input, which is not open`)
				continue
			}
			sc := bufio.NewScanner(in)
			for sc.Scan() {
				line, _, _ := strings.Cut(sc.Text(), "#")
				if strings.Contains(line, "=") {
					set(line)
				}
			}
			if err := sc.Err(); err != nil {
				errs = append(errs, fmt.Sprintf("read standard input: %v", err))
			}
		case strings.Contains(a, "="):
			set(a)
		case strings.HasSuffix(a, "-"):
			if name := strings.TrimSuffix(a, "-"); !slices.Contains(e.remove, name) {
				e.remove = append(e.remove, name)
			}
		default:
			errs = append(errs, fmt.Sprintf("%q: expected KEY=VALUE to set a variable or KEY- to remove one", a))
		}
	}
	if len(errs) > 0 {
		return envEdit{}, errors.New(strings.Join(errs, "\n"))
	}
	return e, nil
}

// validEnvNameChars are the characters kubectl keeps when it turns a
// ConfigMap or Secret key into a variable name.
var validEnvNameChars = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// keyToEnvName turns a ConfigMap or Secret key into a variable name as
// kubectl set env --from does: upper case, other characters made '_'.
func keyToEnvName(key string) string {
	return strings.ToUpper(validEnvNameChars.ReplaceAllString(key, "_"))
}

// parseFrom reads --from: configmap/NAME or secret/NAME.
func parseFrom(from string) (pb.KindInfo, string, error) {
	kind, name, ok := strings.Cut(from, "/")
	if !ok || name == "" {
		return pb.KindInfo{}, "", fmt.Errorf("--from %q: expected configmap/NAME or secret/NAME", from)
	}
	info, err := lookupKind(kind)
	if err != nil {
		return pb.KindInfo{}, "", fmt.Errorf("--from %q: %w", from, err)
	}
	if info.Kind != "ConfigMap" && info.Kind != "Secret" {
		return pb.KindInfo{}, "", fmt.Errorf("--from %q: variables come from a configmap or a secret, not %s", from, info.Plural)
	}
	return info, name, nil
}

// envFrom returns a variable for each key of a ConfigMap's data or a
// Secret's data (only those in keys, when it is not empty), referring to
// the key rather than copying its value, as kubectl set env --from writes
// them; sorted by key, so the result does not depend on map order. A key
// in keys that the object lacks is an error.
func envFrom(obj *pb.Object, keys []string) ([]*pb.EnvVar, error) {
	var have []string
	var ref func(key string) *pb.EnvVarSource
	name := obj.Meta().GetName()
	switch {
	case obj.GetConfigMap() != nil:
		for k := range obj.GetConfigMap().GetData() {
			have = append(have, k)
		}
		ref = func(key string) *pb.EnvVarSource {
			return &pb.EnvVarSource{ConfigMapKeyRef: &pb.ConfigMapKeySelector{Name: name, Key: key}}
		}
	case obj.GetSecret() != nil:
		for k := range obj.GetSecret().GetData() {
			have = append(have, k)
		}
		ref = func(key string) *pb.EnvVarSource {
			return &pb.EnvVarSource{SecretKeyRef: &pb.SecretKeySelector{Name: name, Key: key}}
		}
	default:
		return nil, fmt.Errorf("%s is not a configmap or a secret", objectRef(obj))
	}
	slices.Sort(have)
	var missing []string
	for _, k := range keys {
		if !slices.Contains(have, k) {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s has no key %s (keys: %s)", objectRef(obj), strings.Join(missing, ", "), strings.Join(have, ", "))
	}
	var out []*pb.EnvVar
	for _, k := range have {
		if len(keys) == 0 || slices.Contains(keys, k) {
			out = append(out, &pb.EnvVar{Name: keyToEnvName(k), ValueFrom: ref(k)})
		}
	}
	return out, nil
}

// with returns e with the variables read --from after those given, and
// prefix before the name of every variable set (those read --from too, as
// kubectl does). A variable both set and removed is an error.
func (e envEdit) with(from []*pb.EnvVar, prefix string) (envEdit, error) {
	out := envEdit{remove: e.remove}
	for _, v := range append(slices.Clone(e.set), from...) {
		v = proto.Clone(v).(*pb.EnvVar)
		v.Name = prefix + v.Name
		if slices.Contains(e.remove, v.GetName()) {
			return envEdit{}, fmt.Errorf("%q is both set and removed: can not both modify and remove the same environment variable in the same command", v.GetName())
		}
		out.set = append(out.set, v)
	}
	return out, nil
}

// updateEnv returns existing with e's changes, as kubectl computes it:
// removed names go, a variable set replaces the one of its name where it
// stands, new ones follow in the order given, and of several given with
// one name the first wins (so a KEY=VALUE argument beats a key of --from).
func updateEnv(existing []*pb.EnvVar, e envEdit) []*pb.EnvVar {
	var out []*pb.EnvVar
	covered := map[string]bool{}
	for _, name := range e.remove {
		covered[name] = true
	}
	find := func(name string) *pb.EnvVar {
		for _, v := range e.set {
			if v.GetName() == name {
				return v
			}
		}
		return nil
	}
	for _, v := range existing {
		if covered[v.GetName()] {
			continue
		}
		if newer := find(v.GetName()); newer != nil {
			covered[v.GetName()] = true
			out = append(out, proto.Clone(newer).(*pb.EnvVar))
			continue
		}
		out = append(out, v)
	}
	for _, v := range e.set {
		if covered[v.GetName()] {
			continue
		}
		covered[v.GetName()] = true
		out = append(out, proto.Clone(v).(*pb.EnvVar))
	}
	return out
}

func envEqual(a, b []*pb.EnvVar) bool {
	return slices.EqualFunc(a, b, func(x, y *pb.EnvVar) bool { return proto.Equal(x, y) })
}

// envValueString is a variable's value as the refusal to overwrite it
// shows it: its value, or where it comes from.
func envValueString(v *pb.EnvVar) string {
	if v.GetValueFrom() != nil {
		return envRefString(v.GetValueFrom())
	}
	return v.GetValue()
}

// envRefString says where a variable's value comes from, in kubectl's
// words.
func envRefString(from *pb.EnvVarSource) string {
	switch {
	case from.GetConfigMapKeyRef() != nil:
		return fmt.Sprintf("configmap %s, key %s", from.GetConfigMapKeyRef().GetName(), from.GetConfigMapKeyRef().GetKey())
	case from.GetSecretKeyRef() != nil:
		return fmt.Sprintf("secret %s, key %s", from.GetSecretKeyRef().GetName(), from.GetSecretKeyRef().GetKey())
	case from.GetFieldRef() != nil:
		return "field path " + from.GetFieldRef().GetFieldPath()
	case from.GetResourceFieldRef() != nil:
		r := from.GetResourceFieldRef()
		prefix := ""
		if r.GetContainerName() != "" {
			prefix = r.GetContainerName() + "/"
		}
		return "resource field " + prefix + r.GetResource()
	}
	return "invalid valueFrom"
}

// applyEnv makes e's changes to the containers of spec that pattern
// selects and reports whether anything changed. Without overwrite, giving
// a variable another value than it has is an error, as kubectl makes it.
func applyEnv(spec *pb.PodSpec, pattern string, e envEdit, overwrite bool) (bool, error) {
	cs, err := selectContainers(spec, pattern)
	if err != nil {
		return false, err
	}
	if !overwrite {
		for _, c := range cs {
			for _, v := range e.set {
				for _, cur := range c.GetEnv() {
					if cur.GetName() == v.GetName() && !proto.Equal(cur, v) {
						return false, fmt.Errorf("'%s' already has a value (%s), and --overwrite is false", cur.GetName(), envValueString(cur))
					}
				}
			}
		}
	}
	changed := false
	for _, c := range cs {
		if next := updateEnv(c.GetEnv(), e); !envEqual(next, c.GetEnv()) {
			c.Env = next
			changed = true
		}
	}
	return changed, nil
}

// listEnv prints the variables of the containers of obj that pattern
// selects, with e's changes made (nothing is written), as kubectl set env
// --list does: a heading per container, KEY=VALUE for a value and a
// comment for a reference.
func listEnv(w io.Writer, obj *pb.Object, pattern string, e envEdit) error {
	spec := podSpecOf(obj)
	if spec == nil {
		return fmt.Errorf("%s has no containers", objectRef(obj))
	}
	cs, err := selectContainers(spec, pattern)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "# %s %s, container %s\n", obj.KindName(), obj.Meta().GetName(), c.GetName())
		for _, v := range updateEnv(c.GetEnv(), e) {
			if v.GetValueFrom() == nil {
				fmt.Fprintf(&b, "%s=%s\n", v.GetName(), v.GetValue())
			} else {
				fmt.Fprintf(&b, "# %s from %s\n", v.GetName(), envRefString(v.GetValueFrom()))
			}
		}
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// checkEnvObjects catches a variable written without '=' (or '-'): after
// KIND/NAME every object is KIND/NAME too, so a bare word there is a
// change missing its '='.
func checkEnvObjects(objects []string) error {
	if len(objects) == 0 || !strings.Contains(objects[0], "/") {
		return nil
	}
	for _, a := range objects[1:] {
		if !strings.Contains(a, "/") {
			return fmt.Errorf("%q is neither KIND/NAME nor a change: set a variable with %s=VALUE, remove one with %s-", a, a, a)
		}
	}
	return nil
}

func newSetEnvCommand(o *Options) *cobra.Command {
	var sel selection
	var containers, from, prefix string
	var envs, keys []string
	var list, overwrite bool
	cmd := &cobra.Command{
		Use:   "env (KIND NAME... | KIND/NAME... | KIND -l SELECTOR | KIND --all) KEY=VALUE... KEY-...",
		Short: "Set or remove environment variables of the containers of workloads",
		Long: `Env sets (KEY=VALUE) and removes (KEY-) environment variables of the containers in the pod
template of Deployments, DaemonSets and ReplicaSets. A change to a Deployment's or DaemonSet's
template rolls out: new pods with the new environment replace the old ones.

  * --containers (-c) picks containers by name, '*' matching any run of characters; every
    container by default, init containers included, as kubectl does.
  * A name given on the command line has letters, digits, '_', '-' and '.', and does not start
    with a digit. Of several values for one name the first wins.
  * --from=configmap/NAME or --from=secret/NAME adds a variable per key of its data, named after
    the key in upper case ('-' and '.' become '_') and referring to the key, not copying its value;
    --keys takes only some keys. --prefix goes before the name of every variable set.
  * "-" reads KEY=VALUE lines from standard input ('#' starts a comment).
  * --list prints each container's variables, with the changes given made, and writes nothing;
    it works on pods and Jobs too.
  * A pod's environment and a Job's pod template can not change once they exist, in Kubernetes
    as here: change the workload that makes the pods, or create the pod or Job again.

Every argument is checked before anything is written. Each object is read, changed and written
back with its resourceVersion, and read again if someone changed it in between; an object whose
variables already are what was asked is not written ("env unchanged").`,
		Example: `  skiff set env deployment/web GREETING=hello MODE=fast
  skiff set env deployment/web MODE-                       # remove MODE
  skiff set env deployment/web -c app LOG_LEVEL=debug      # only the container app
  skiff set env deployment/web --list
  skiff set env pods --all --list
  skiff set env deployment/web --from=configmap/settings --prefix=APP_
  skiff set env deployment/web --from=secret/db --keys=password
  skiff set env deployments -l tier=web REGION=eu
  skiff set env daemonset/node-agent --overwrite=false TOKEN=abc   # refuse to change a value
  env | grep ^RAILS_ | skiff set env deployment/web -`,
		ValidArgsFunction: completeKinds,
		RunE: func(cmd *cobra.Command, args []string) error {
			const verb, what = "set env", "environment"
			objects, changes, err := splitArgs(args, "environment", isEnvChange)
			if err != nil {
				return err
			}
			if err := checkEnvObjects(objects); err != nil {
				return err
			}
			edit, err := parseEnvChanges(append(slices.Clone(envs), changes...), o.In)
			if err != nil {
				return err
			}
			var fromKind pb.KindInfo
			var fromName string
			switch {
			case from != "":
				if fromKind, fromName, err = parseFrom(from); err != nil {
					return err
				}
			case len(keys) > 0:
				return errors.New("--keys picks keys of the configmap or secret given with --from: give --from")
			case !list && edit.empty():
				return errors.New("at least one environment variable change is required: KEY=VALUE to set, KEY- to remove, or --from")
			}
			if prefix != "" {
				if err := checkEnvName(prefix); err != nil {
					return fmt.Errorf("--prefix: %w", err)
				}
			}
			if _, err := edit.with(nil, prefix); err != nil {
				return err
			}
			if err := planPodSpecs(&sel, objects, verb, what, !list); err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			var vars []*pb.EnvVar
			if from != "" {
				src := objectKey{kind: fromKind, namespace: orDefault(sel.namespace, "default"), name: fromName}
				obj, err := c.Get(ctx, src.kind.Kind, src.namespace, src.name, client.ReadOptions{})
				if err != nil {
					return apiError(src.notFound(err))
				}
				if vars, err = envFrom(obj, keys); err != nil {
					return err
				}
			}
			if edit, err = edit.with(vars, prefix); err != nil {
				return err
			}
			keysSel, err := sel.resolve(ctx, c, objects, verb)
			if err != nil {
				return err
			}
			if list {
				return eachObject(ctx, o, c, keysSel, func(w io.Writer, obj *pb.Object) error {
					return listEnv(w, obj, containers, edit)
				})
			}
			return changeEach(ctx, o, c, keysSel, "updated", func(obj *pb.Object) (string, bool, error) {
				if why := frozenContainers(obj.KindName(), what); why != "" {
					return "", false, errors.New(why)
				}
				spec := podSpecOf(obj)
				if spec == nil {
					return "", false, fmt.Errorf("%s has no containers", objectRef(obj))
				}
				changed, err := applyEnv(spec, containers, edit, overwrite)
				if err != nil || !changed {
					return "env unchanged", false, err
				}
				return "env updated", true, nil
			})
		},
	}
	sel.addFlags(cmd, true)
	f := cmd.Flags()
	f.StringVarP(&containers, "containers", "c", "*", "the containers to change, by name; '*' matches any run of characters")
	f.StringArrayVarP(&envs, "env", "e", nil, "a KEY=VALUE to set, or KEY- to remove (repeatable), as an argument would")
	f.StringVar(&from, "from", "", "add a variable per key of configmap/NAME or secret/NAME, referring to the key")
	f.StringSliceVar(&keys, "keys", nil, "with --from: only these keys (comma-separated)")
	f.StringVar(&prefix, "prefix", "", "put this before the name of every variable set")
	f.BoolVar(&list, "list", false, "print the containers' variables (with the changes given made) and write nothing")
	f.BoolVar(&overwrite, "overwrite", true, "allow changing the value of a variable the container has; false refuses")
	return cmd
}
