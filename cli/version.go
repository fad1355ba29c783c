package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newVersionCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version of this command and of the masters",
		Example: "  skiff version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(o.Out, "Client Version: %s\n", o.Version)
			c, err := o.client()
			if err != nil || c == nil {
				return nil
			}
			defer c.Close()
			ctx, cancel := o.context()
			defer cancel()
			st, err := c.Status(ctx)
			if err != nil {
				fmt.Fprintf(o.Out, "Server Version: unknown (%s)\n", errMessage(err))
				return nil
			}
			for _, s := range st.GetServers() {
				fmt.Fprintf(o.Out, "Server Version: %s (%s)\n", orDefault(s.GetVersion(), "unknown"), s.GetName())
			}
			return nil
		},
	}
}
