package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// replaceAttempts bounds how often replace re-reads an object that changed
// between its read and its update (a controller writing status, say).
const replaceAttempts = 5

func newReplaceCommand(o *Options) *cobra.Command {
	var files []string
	var recursive bool
	var namespace string
	cmd := &cobra.Command{
		Use:   "replace -f FILE|DIR|-",
		Short: "Replace existing objects with the manifests, metadata lists included",
		Long: `Replace overwrites each object in the manifests with what the manifest says: the spec, and the
labels, annotations, finalizers and ownerReferences, each list as a whole. What a manifest leaves
out is removed, which apply (a merge) never does; status is not touched.

Each object must exist (create new ones with skiff apply). Without a metadata.resourceVersion in
the manifest the object's current one is used, and the update is retried on a conflict; with one,
the object must not have changed since that version. Every object is checked, and its existence
confirmed, before anything is replaced.

Removing the finalizers of an object that is being deleted (its deletionTimestamp is set) releases
it: it is deleted as soon as no finalizer remains.`,
		Example: `  skiff replace -f web.yaml

  # Release a ConfigMap stuck in deletion on the finalizer of a controller that is gone:
  skiff get configmap settings -o yaml > settings.yaml
  #   (edit settings.yaml: delete the finalizers: list)
  skiff replace -f settings.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := loadManifests(files, recursive, namespace, o.In)
			if err != nil {
				return err
			}
			if bad := checkObjects(objs); len(bad) > 0 {
				return nothingStored(o, bad, len(objs), "replaced")
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			live, bad, err := readLive(ctx, c, objs)
			if err != nil {
				return apiError(err)
			}
			if len(bad) > 0 {
				return nothingStored(o, bad, len(objs), "replaced")
			}
			failed := 0
			for i, m := range objs {
				resp, err := replaceObject(ctx, c, m.Object, live[i])
				if err != nil {
					failed++
					fmt.Fprintf(o.ErrOut, "error: %s\n", m.describe(nil, errors.New(errMessage(err))))
					continue
				}
				fmt.Fprintf(o.Out, "%s %s\n", objectRef(resp.GetObject()), replacedWord(resp.GetAction()))
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d objects were not replaced", failed, len(objs))
			}
			return nil
		},
	}
	manifestFlags(cmd, &files, &recursive, &namespace)
	return cmd
}

// readLive reads the stored version of every object. bad lists the objects
// that do not exist; err is any other failure to read.
func readLive(ctx context.Context, c manifestClient, objs []manifestObject) (live []*pb.Object, bad []string, err error) {
	live = make([]*pb.Object, len(objs))
	for i, m := range objs {
		meta := m.Object.Meta()
		cur, err := c.Get(ctx, m.Object.KindName(), meta.GetNamespace(), meta.GetName(), client.ReadOptions{})
		if status.Code(err) == codes.NotFound {
			bad = append(bad, m.describe(nil, fmt.Errorf("%s not found: replace changes existing objects; create it with skiff apply", objectRef(m.Object))))
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		live[i] = cur
	}
	return live, bad, nil
}

// replaceObject updates the stored object to obj. Unless obj names a
// resourceVersion, the update carries the version last read, and a conflict
// (someone wrote in between) is retried after reading again: the manifest
// replaces the object whatever it holds, as kubectl replace does. A
// resourceVersion in the manifest is the user's own precondition, so its
// conflict is reported instead.
func replaceObject(ctx context.Context, c manifestClient, obj, live *pb.Object) (*pb.WriteResponse, error) {
	pinned := obj.Meta().GetResourceVersion() != 0
	meta := obj.Meta()
	for attempt := 1; ; attempt++ {
		o := obj.Clone()
		if !pinned {
			o.Meta().ResourceVersion = live.Meta().GetResourceVersion()
		}
		resp, err := c.Update(ctx, o)
		if status.Code(err) != codes.Aborted || pinned || attempt == replaceAttempts {
			return resp, err
		}
		if live, err = c.Get(ctx, obj.KindName(), meta.GetNamespace(), meta.GetName(), client.ReadOptions{}); err != nil {
			return nil, err
		}
	}
}

// replacedWord is what replace prints for the store's action.
func replacedWord(action string) string {
	if action == "deleted" {
		// Its deletion was waiting only for the finalizers just removed.
		return "replaced and deleted (no finalizers remain)"
	}
	return "replaced" // as kubectl prints it, changed or not
}
