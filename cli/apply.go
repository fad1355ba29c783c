package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

func newApplyCommand(o *Options) *cobra.Command {
	var files []string
	var recursive, dryRun bool
	var namespace string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update objects from YAML or JSON manifests",
		Long: `Apply creates each object in the manifests, or updates it if it exists. It is idempotent:
applying the same manifest twice reports "unchanged".

Every document is decoded and checked before anything is stored, so a mistake in one document
stores nothing: each object is validated here, then by the masters in a dry run that runs every
check of the real write (namespace missing or terminating, a clusterIP or node port another
Service holds, immutable fields). The namespace of each new object must exist or be created by
the same manifests. Every problem found is reported, naming the file, the document and the field.

The objects are then written one by one. What only the store can decide at that moment (a node
port another Service took meanwhile, a namespace deleted meanwhile) can still fail an object
after others were stored; such failures are reported per object.

Apply merges: it adds a manifest's annotations to the stored ones, and keeps the stored
finalizers and ownerReferences when a manifest lists none. To remove any of them (to release an
object stuck in deletion, say), use skiff replace.`,
		Example: `  skiff apply -f web.yaml
  skiff apply -f manifests/ -R
  cat web.yaml | skiff apply -f -
  skiff apply -f web.yaml --dry-run   # check everything, store nothing`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := loadManifests(files, recursive, namespace, o.In)
			if err != nil {
				return err
			}
			if bad := checkObjects(objs); len(bad) > 0 {
				return nothingStored(o, bad, len(objs), "applied")
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			return runApply(ctx, o, c, objs, dryRun)
		},
	}
	manifestFlags(cmd, &files, &recursive, &namespace)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "run every check, on the masters too, and report what would happen, storing nothing")
	return cmd
}

// runApply checks objs on the masters and, if every one passes, applies
// them.
func runApply(ctx context.Context, o *Options, c manifestClient, objs []manifestObject, dryRun bool) error {
	checked, bad, err := checkOnServer(ctx, c, objs)
	if err != nil {
		return apiError(err)
	}
	if len(bad) > 0 {
		return nothingStored(o, bad, len(objs), "applied")
	}
	if dryRun {
		for _, resp := range checked {
			fmt.Fprintf(o.Out, "%s %s (dry run)\n", objectRef(resp.GetObject()), resp.GetAction())
		}
		return nil
	}
	failed := 0
	for _, m := range objs {
		resp, err := c.Apply(ctx, m.Object, false)
		if err != nil {
			failed++
			fmt.Fprintf(o.ErrOut, "error: %s\n", m.describe(nil, errors.New(errMessage(err))))
			continue
		}
		fmt.Fprintf(o.Out, "%s %s\n", objectRef(resp.GetObject()), resp.GetAction())
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d objects were not applied", failed, len(objs))
	}
	return nil
}

// manifestFlags adds the flags of commands that read manifests.
func manifestFlags(cmd *cobra.Command, files *[]string, recursive *bool, namespace *string) {
	cmd.Flags().StringArrayVarP(files, "filename", "f", nil, "manifest file, directory of .yaml/.yml/.json files, or - for standard input (repeatable)")
	cmd.Flags().BoolVarP(recursive, "recursive", "R", false, "read directories recursively")
	cmd.Flags().StringVarP(namespace, "namespace", "n", "", "namespace for objects that name none (default \"default\")")
}

// manifestObject is one object of the manifests with where it came from, so
// that every later error can name the file and document.
type manifestObject struct {
	pb.ManifestObject
	source string // the file, or "standard input"
}

// describe formats a problem with m like the decoder's errors:
//
//	web.yaml: document 2 (ConfigMap Bad_Name): metadata.name: Invalid value: ...
func (m manifestObject) describe(fes []pb.FieldError, err error) string {
	meta := m.Object.Meta()
	name := meta.GetName()
	if name == "" {
		name = meta.GetGenerateName()
	}
	de := &pb.DocumentError{Document: m.Document, Item: m.Item, Line: m.Line,
		Kind: m.Object.KindName(), Name: name, Errors: fes, Err: err}
	return m.source + ": " + de.Error()
}

// loadManifests reads, decodes and namespaces the objects of apply and
// replace.
func loadManifests(files []string, recursive bool, namespace string, stdin io.Reader) ([]manifestObject, error) {
	if len(files) == 0 {
		return nil, errors.New("no manifests: pass -f FILE, -f DIR or -f -")
	}
	objs, err := readManifestObjects(files, recursive, stdin)
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 {
		return nil, errors.New("the manifests contain no objects")
	}
	plain := make([]*pb.Object, len(objs))
	for i, m := range objs {
		plain[i] = m.Object
	}
	setNamespaces(plain, namespace)
	return objs, nil
}

// checkObjects runs on a copy of every object the defaulting and validation
// the masters run, so that a mistake anywhere stops the whole run before
// anything is stored. The size limit is left to the masters (it is theirs
// to configure).
func checkObjects(objs []manifestObject) []string {
	var bad []string
	for _, m := range objs {
		o := m.Object.Clone()
		pb.SetDefaults(o)
		var fes []pb.FieldError
		if o.Meta().GetName() == "" && o.Meta().GetGenerateName() != "" {
			// The store needs a name to find the object again; a generated
			// one would create a new object on every run.
			fes = append(fes, pb.FieldError{Path: "metadata.name",
				Message: "Required value: generateName works only with create: give the object a name"})
		}
		if err := pb.ValidateWithLimit(o, 0); err != nil {
			var ve *pb.ValidationError
			if !errors.As(err, &ve) {
				bad = append(bad, m.describe(nil, err))
				continue
			}
			fes = append(fes, ve.Errors...)
		}
		if len(fes) > 0 {
			bad = append(bad, m.describe(fes, nil))
		}
	}
	return bad
}

// manifestClient is what apply and replace need of *client.Client; tests
// pass a fake.
type manifestClient interface {
	Get(ctx context.Context, kind, namespace, name string, opts client.ReadOptions) (*pb.Object, error)
	Apply(ctx context.Context, obj *pb.Object, dryRun bool) (*pb.WriteResponse, error)
	Update(ctx context.Context, obj *pb.Object) (*pb.WriteResponse, error)
}

// checkOnServer asks the masters to check every object in a dry run, which
// runs every check of the store, namespaces included. The masters cannot
// know of namespaces the same manifests create: an object refused only
// because its namespace does not exist yet passes when the manifests
// create that namespace (namespaces are applied first), and otherwise the
// refusal says how to fix it. bad lists each object's problems; err is a
// failure to reach the cluster.
func checkOnServer(ctx context.Context, c manifestClient, objs []manifestObject) (checked []*pb.WriteResponse, bad []string, err error) {
	created := map[string]bool{} // namespaces in the manifests
	for _, m := range objs {
		if m.Object.KindName() == "Namespace" {
			created[m.Object.Meta().GetName()] = true
		}
	}
	namespaces := map[string]nsState{} // looked up once per run
	for _, m := range objs {
		resp, err := c.Apply(ctx, m.Object, true)
		if err == nil {
			checked = append(checked, resp)
			continue
		}
		if transportHint(err) != "" {
			return nil, nil, err
		}
		info, _ := pb.LookupKind(m.Object.KindName())
		if status.Code(err) == codes.FailedPrecondition && info.Namespaced {
			// The store refuses to create objects in a namespace that is
			// missing or terminating; find out which.
			ns := m.Object.Meta().GetNamespace()
			st, seen := namespaces[ns]
			if !seen {
				var gerr error
				if st, gerr = namespaceState(ctx, c, ns); gerr != nil {
					return nil, nil, gerr
				}
				namespaces[ns] = st
			}
			switch {
			case (st.missing || st.unknown) && created[ns]:
				// Created before this object is written: it would be
				// created too, though the checks that need its namespace
				// run only when it is written.
				checked = append(checked, &pb.WriteResponse{Object: m.Object, Action: "created"})
				continue
			case st.missing:
				bad = append(bad, m.describe([]pb.FieldError{{Path: "metadata.namespace",
					Message: fmt.Sprintf("namespace %q not found: create it first, or add a Namespace document to the manifests", ns)}}, nil))
				continue
			case st.terminating:
				bad = append(bad, m.describe([]pb.FieldError{{Path: "metadata.namespace",
					Message: fmt.Sprintf("namespace %q is terminating: nothing new can be created in it; wait until it is gone and create it again", ns)}}, nil))
				continue
			}
		}
		bad = append(bad, m.describe(nil, errors.New(errMessage(err))))
	}
	return checked, bad, nil
}

// nsState is what checkOnServer knows of a namespace; the zero value (an
// active namespace) adds nothing to the masters' answer. unknown is a
// namespace this credential may not read.
type nsState struct{ missing, terminating, unknown bool }

func namespaceState(ctx context.Context, c manifestClient, ns string) (nsState, error) {
	obj, err := c.Get(ctx, "Namespace", "", ns, client.ReadOptions{})
	switch {
	case status.Code(err) == codes.NotFound:
		return nsState{missing: true}, nil
	case status.Code(err) == codes.PermissionDenied:
		return nsState{unknown: true}, nil
	case err != nil:
		return nsState{}, err
	}
	return nsState{terminating: obj.Meta().GetDeletionTimestamp() != nil || obj.GetNamespace().GetStatus().GetPhase() == "Terminating"}, nil
}

// nothingStored prints every problem and returns the error that ends the
// command.
func nothingStored(o *Options, bad []string, total int, verb string) error {
	for _, b := range bad {
		fmt.Fprintf(o.ErrOut, "error: %s\n", b)
	}
	return fmt.Errorf("%d of %d objects failed the checks: nothing was %s; fix the manifests and run again", len(bad), total, verb)
}

// readManifests decodes every document of every file before anything is
// applied. Namespaces come first so that objects inside them can be created
// in the same run.
func readManifests(paths []string, recursive bool, stdin io.Reader) ([]*pb.Object, error) {
	mos, err := readManifestObjects(paths, recursive, stdin)
	if err != nil {
		return nil, err
	}
	out := make([]*pb.Object, len(mos))
	for i, m := range mos {
		out[i] = m.Object
	}
	return out, nil
}

// readManifestObjects is readManifests keeping where each object came from.
func readManifestObjects(paths []string, recursive bool, stdin io.Reader) ([]manifestObject, error) {
	var out []manifestObject
	for _, p := range paths {
		files, err := manifestFiles(p, recursive)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			var data []byte
			name := f
			if f == "-" {
				data, err = io.ReadAll(stdin)
				name = "standard input"
			} else {
				data, err = os.ReadFile(f)
			}
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", f, err)
			}
			mos, err := pb.DecodeManifestObjects(data)
			if err != nil {
				return nil, fmt.Errorf("%s: %w (nothing was applied)", name, err)
			}
			for _, mo := range mos {
				out = append(out, manifestObject{ManifestObject: mo, source: name})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].Object.KindName() == "Namespace" && out[j].Object.KindName() != "Namespace"
	})
	return out, nil
}

func manifestFiles(path string, recursive bool) ([]string, error) {
	if path == "-" {
		return []string{"-"}, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != path && !recursive {
				return filepath.SkipDir
			}
			return nil
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read manifests in %s: %w", path, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s contains no .yaml, .yml or .json files", path)
	}
	sort.Strings(files)
	return files, nil
}

// setNamespaces gives namespaced objects that name none the -n namespace or
// "default".
func setNamespaces(objs []*pb.Object, ns string) {
	if ns == "" {
		ns = "default"
	}
	for _, obj := range objs {
		info, ok := pb.LookupKind(obj.KindName())
		if ok && info.Namespaced && obj.Meta().GetNamespace() == "" {
			obj.Meta().Namespace = ns
		}
	}
}

// objectRef names an object the way the CLI prints it: deployment/web.
func objectRef(obj *pb.Object) string {
	return strings.ToLower(obj.KindName()) + "/" + obj.Meta().GetName()
}
