package cli

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	pb "github.com/skiff-sh/skiff/proto"
)

func newAPIResourcesCommand(o *Options) *cobra.Command {
	var namespaced, output string
	var noHeaders bool
	cmd := &cobra.Command{
		Use:   "api-resources",
		Short: "List the kinds of objects skiff stores, with their short names",
		Long: `Api-resources lists the kinds this build of skiff knows, as kubectl api-resources does: the
name get and the other commands take (or a short name), the apiVersion manifests give, and
whether objects of the kind live in a namespace. Masters and CLI of one build know the same
kinds, so it asks no master.`,
		Example: `  skiff api-resources
  skiff api-resources --namespaced=false
  skiff api-resources -o name`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var onlyNamespaced *bool
			if namespaced != "" {
				v, err := strconv.ParseBool(namespaced)
				if err != nil {
					return fmt.Errorf("--namespaced %q: use true or false", namespaced)
				}
				onlyNamespaced = &v
			}
			if output != "" && output != "name" {
				return fmt.Errorf("--output %q: use name (or no -o for the table)", output)
			}
			kinds := pb.Kinds()
			// kubectl's order: the core group first, then by group, then by name.
			sort.SliceStable(kinds, func(i, j int) bool {
				gi, gj := apiGroup(kinds[i].APIVersion), apiGroup(kinds[j].APIVersion)
				if gi != gj {
					return gi < gj
				}
				return kinds[i].Plural < kinds[j].Plural
			})
			tw := tabwriter.NewWriter(o.Out, 3, 0, 3, ' ', 0)
			if output != "name" && !noHeaders {
				fmt.Fprintln(tw, "NAME\tSHORTNAMES\tAPIVERSION\tNAMESPACED\tKIND")
			}
			for _, k := range kinds {
				if onlyNamespaced != nil && k.Namespaced != *onlyNamespaced {
					continue
				}
				if output == "name" {
					name := k.Plural
					if g := apiGroup(k.APIVersion); g != "" {
						name += "." + g
					}
					fmt.Fprintln(tw, name)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\n", k.Plural, strings.Join(k.Short, ","), k.APIVersion, k.Namespaced, k.Kind)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&namespaced, "namespaced", "", "true: only kinds that live in a namespace; false: only cluster-wide ones")
	f.StringVarP(&output, "output", "o", "", "name: only the names (plural.group), as kubectl prints them")
	f.BoolVar(&noHeaders, "no-headers", false, "print the table without its header line")
	return cmd
}

// apiGroup is the group of an apiVersion ("" for the core group's v1).
func apiGroup(apiVersion string) string {
	if g, _, ok := strings.Cut(apiVersion, "/"); ok {
		return g
	}
	return ""
}
