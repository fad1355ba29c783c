package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

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
applying the same manifest twice reports "unchanged". Every document is decoded and checked
before anything is stored, so a mistake in one document stores nothing.`,
		Example: `  skiff apply -f web.yaml
  skiff apply -f manifests/ -R
  cat web.yaml | skiff apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return errors.New("no manifests: pass -f FILE, -f DIR or -f -")
			}
			objs, err := readManifests(files, recursive, o.In)
			if err != nil {
				return err
			}
			if len(objs) == 0 {
				return errors.New("the manifests contain no objects")
			}
			setNamespaces(objs, namespace)
			c, err := o.client()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := o.context()
			defer cancel()
			failed := 0
			for _, obj := range objs {
				resp, err := c.Apply(ctx, obj, dryRun)
				if err != nil {
					failed++
					fmt.Fprintf(o.ErrOut, "error: %s: %s\n", objectRef(obj), errMessage(err))
					continue
				}
				suffix := ""
				if dryRun {
					suffix = " (dry run)"
				}
				fmt.Fprintf(o.Out, "%s %s%s\n", objectRef(resp.GetObject()), resp.GetAction(), suffix)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d objects were not applied", failed, len(objs))
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory of .yaml/.yml/.json files, or - for standard input (repeatable)")
	cmd.Flags().BoolVarP(&recursive, "recursive", "R", false, "read directories recursively")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate on the server and report what would happen, storing nothing")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace for objects that name none (default \"default\")")
	return cmd
}

// readManifests decodes every document of every file before anything is
// applied. Namespaces come first so that objects inside them can be created
// in the same run.
func readManifests(paths []string, recursive bool, stdin io.Reader) ([]*pb.Object, error) {
	var out []*pb.Object
	for _, p := range paths {
		files, err := manifestFiles(p, recursive)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			var data []byte
			if f == "-" {
				data, err = io.ReadAll(stdin)
			} else {
				data, err = os.ReadFile(f)
			}
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", f, err)
			}
			objs, err := pb.DecodeManifests(data)
			if err != nil {
				name := f
				if f == "-" {
					name = "standard input"
				}
				return nil, fmt.Errorf("%s: %w (nothing was applied)", name, err)
			}
			out = append(out, objs...)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].KindName() == "Namespace" && out[j].KindName() != "Namespace"
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
