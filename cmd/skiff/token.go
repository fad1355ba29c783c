package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/skiff-sh/skiff/cli"
	"github.com/skiff-sh/skiff/pki"
)

func newTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Show the cluster token; create, list and delete users' bearer tokens",
	}
	var file string
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the cluster token (root-equivalent: share it only with machines that join)",
		Long: `show prints the token in --token-file after checking that its secret matches its CA
hash. Write it into a file on a new machine and start skiff server or skiff worker with
--token-file pointing at that file.`,
		Example: `  skiff token show --token-file /etc/skiff/token`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("--token-file is required")
			}
			tok, err := pki.ReadTokenFile(file)
			if err != nil {
				return err
			}
			if _, err := tok.CA(); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.String())
			return nil
		},
	}
	show.Flags().StringVar(&file, "token-file", "", "the cluster token file")
	cmd.AddCommand(show)
	cmd.AddCommand(cli.TokenCommands()...)
	return cmd
}
