package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func newClusterCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect and operate the masters' Raft group",
		Example: `  skiff cluster status
  skiff cluster transfer-leadership --to m2
  skiff cluster snapshot save backup.snap`,
	}
	cmd.AddCommand(newClusterStatusCommand(o), newTransferCommand(o), newRemovePeerCommand(o), newSnapshotCommand(o))
	return cmd
}

func newClusterStatusCommand(o *Options) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show the leader, the term and every master's state",
		Example: "  skiff cluster status\n  skiff cluster status -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("--output %q: use json or leave it out", output)
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			st, err := c.Status(ctx)
			if err != nil {
				return apiError(err)
			}
			if output == "json" {
				data, err := statusJSON(st)
				if err != nil {
					return err
				}
				fmt.Fprintln(o.Out, string(data))
				return nil
			}
			leader := st.GetLeader()
			if leader == "" {
				leader = "<none>"
			}
			fmt.Fprintf(o.Out, "Leader: %s\nTerm: %d\nCommit index: %d\n\n", leader, st.GetTerm(), st.GetCommitIndex())
			tw := tabwriter.NewWriter(o.Out, 3, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tRAFT ADDRESS\tAPI ADDRESS\tSTATE\tVOTER\tAPPLIED INDEX")
			for _, s := range st.GetServers() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%d\n", s.GetName(), s.GetId(), s.GetRaftAddress(),
					dash(s.GetApiAddress()), s.GetState(), s.GetVoter(), s.GetAppliedIndex())
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if w := st.GetWarning(); w != "" {
				fmt.Fprintf(o.Out, "\nWarning: %s\n", w)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json for machine-readable output")
	return cmd
}

// statusJSON renders cluster status with every field, numbers as JSON
// numbers (protojson writes 64-bit integers as strings, so a script would
// read "term": "2"), and keys sorted so the output is stable.
func statusJSON(m proto.Message) ([]byte, error) {
	return json.MarshalIndent(jsonValue(m.ProtoReflect()), "", "  ")
}

// jsonValue turns a message into encoding/json values: every field by its
// JSON name, unset ones as their zero value, enums by name.
func jsonValue(m protoreflect.Message) map[string]any {
	out := map[string]any{}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			items := make([]any, l.Len())
			for j := range l.Len() {
				items[j] = jsonScalar(fd, l.Get(j))
			}
			out[fd.JSONName()] = items
		case fd.IsMap():
			mp := map[string]any{}
			v.Map().Range(func(k protoreflect.MapKey, val protoreflect.Value) bool {
				mp[k.String()] = jsonScalar(fd.MapValue(), val)
				return true
			})
			out[fd.JSONName()] = mp
		case fd.Message() != nil && !m.Has(fd):
			out[fd.JSONName()] = nil
		default:
			out[fd.JSONName()] = jsonScalar(fd, v)
		}
	}
	return out
}

func jsonScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return jsonValue(v.Message())
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return int32(v.Enum())
	case protoreflect.BytesKind:
		return v.Bytes() // base64, as protojson
	}
	return v.Interface() // string, bool, the integer and float kinds
}

func newTransferCommand(o *Options) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:     "transfer-leadership [--to NAME]",
		Short:   "Hand leadership to another master (before maintenance on the leader)",
		Example: "  skiff cluster transfer-leadership\n  skiff cluster transfer-leadership --to m2",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			leader, err := c.TransferLeadership(ctx, to)
			if err != nil {
				return apiError(err)
			}
			fmt.Fprintf(o.Out, "leadership transferred to %s\n", leader)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "name of the master to lead (default: the most up-to-date follower)")
	return cmd
}

func newRemovePeerCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "remove-peer NAME",
		Short: "Remove a master from the Raft configuration (a dead machine that will not return)",
		Long: `remove-peer takes a master out of the voting configuration so that the cluster's quorum no
longer counts it. Use it for a master whose machine is gone for good; a master that is merely
restarting rejoins by itself.`,
		Example: "  skiff cluster remove-peer m3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			if err := c.RemovePeer(ctx, args[0]); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(o.Out, "removed %s from the cluster\n", args[0])
			return nil
		},
	}
}

func newSnapshotCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save the cluster state to a file, or restore it (disaster recovery)",
		Example: `  skiff cluster snapshot save backup.snap
  skiff cluster snapshot restore backup.snap   # onto a fresh cluster`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "save FILE",
		Short:   "Write a consistent snapshot of the whole cluster state to FILE",
		Example: "  skiff cluster snapshot save backup.snap",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			tmp, err := os.CreateTemp(filepath.Dir(args[0]), ".snapshot-*")
			if err != nil {
				return fmt.Errorf("create %s: %w", args[0], err)
			}
			defer os.Remove(tmp.Name())
			n, err := c.SnapshotSave(ctx, tmp, progressPrinter(o, "received"))
			if err != nil {
				tmp.Close()
				return apiError(err)
			}
			if err := tmp.Sync(); err != nil {
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), args[0]); err != nil {
				return err
			}
			endProgress(o)
			fmt.Fprintf(o.Out, "saved snapshot to %s (%d bytes)\n", args[0], n)
			return nil
		},
	}, &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the whole cluster state with a snapshot",
		Long: `restore replaces every object in the cluster with the snapshot's. It is meant for disaster
recovery onto a fresh cluster: start new masters, then restore the last saved snapshot.`,
		Example: "  skiff cluster snapshot restore backup.snap",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			index, err := c.SnapshotRestore(ctx, f, progressPrinter(o, "sent"))
			if err != nil {
				return apiError(err)
			}
			endProgress(o)
			fmt.Fprintf(o.Out, "restored snapshot %s; the cluster state is now at index %d\n", args[0], index)
			return nil
		},
	})
	return cmd
}

// progressPrinter shows a byte count on stderr as a long transfer goes on,
// when stderr is a terminal.
func progressPrinter(o *Options, verb string) func(int64) {
	f, ok := o.ErrOut.(*os.File)
	if !ok {
		return nil
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return func(n int64) {
		fmt.Fprintf(o.ErrOut, "\r%s %d KiB\033[K", verb, n/1024)
	}
}

// endProgress clears the progress line.
func endProgress(o *Options) {
	if progressPrinter(o, "") != nil {
		fmt.Fprint(o.ErrOut, "\r\033[K")
	}
}
