package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// topClient is what skiff top needs of *client.Client; tests fake it.
type topClient interface {
	Get(ctx context.Context, kind, namespace, name string, opts client.ReadOptions) (*pb.Object, error)
	List(ctx context.Context, kind string, opts client.ListOptions) ([]*pb.Object, uint64, error)
	Stats(ctx context.Context, req *pb.StatsRequest) (*pb.StatsResponse, error)
}

// topParallel bounds the Stats calls in flight (one per node).
const topParallel = 16

const unknownUsage = "<unknown>"

func newTopCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top (pods | nodes)",
		Short: "Show the CPU and memory usage of pods or nodes",
		Long: `Top shows what pods and nodes use now, as kubectl top does. There is no metrics server:
the masters relay the question to the workers, which read their containers' cgroups.

CPU(cores) is CPU in use in millicores (1000m is one core), measured over the last seconds
(the worker keeps its earlier reads, every --stats-interval of the worker); MEMORY(bytes) is
the memory working set in MiB (usage less inactive file pages: what kubectl top and
evictions count). Hollow nodes run no containers and report no usage.`,
		Example: `  skiff top pods
  skiff top pods -A --sort-by=cpu
  skiff top pod web-7d4b9 --containers
  skiff top nodes`,
	}
	cmd.AddCommand(newTopPodsCommand(o), newTopNodesCommand(o))
	return cmd
}

// topPodsOptions are skiff top pods' flags.
type topPodsOptions struct {
	namespace     string
	allNamespaces bool
	selector      string
	fieldSelector string
	containers    bool
	sortBy        string
	noHeaders     bool
	sum           bool
}

func newTopPodsCommand(o *Options) *cobra.Command {
	var opts topPodsOptions
	cmd := &cobra.Command{
		Use:     "pods [NAME | -l SELECTOR | --field-selector SELECTOR]",
		Aliases: []string{"pod", "po"},
		Short:   "Show the CPU and memory usage of pods",
		Long: `Top pods shows the CPU (millicores) and memory working set (MiB) of each pod, the sum of its
running containers, or of each container with --containers. A pod without a running container
is left out; a pod on a node that cannot be reached or is hollow is left out with a warning.`,
		Example: `  # Pods of the default namespace
  skiff top pods

  # Every namespace, the busiest first
  skiff top pods -A --sort-by=cpu

  # One pod, container by container
  skiff top pod web-7d4b9 --containers

  # The pods of a label selector, and what they use together
  skiff top pods -l app=web --sum

  # The pods on one node
  skiff top pods -A --field-selector spec.nodeName=w1`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = strings.TrimPrefix(strings.TrimPrefix(args[0], "pod/"), "pods/")
			}
			if err := opts.validate(name); err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			return runTopPods(ctx, c, opts, name, o.Out, o.ErrOut)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.namespace, "namespace", "n", "default", "namespace of the pods")
	f.BoolVarP(&opts.allNamespaces, "all-namespaces", "A", false, "pods of every namespace")
	f.StringVarP(&opts.selector, "selector", "l", "", "only pods of this label selector: a=b, a!=b, a in (x,y), !a")
	f.StringVar(&opts.fieldSelector, "field-selector", "", "only pods of this field selector (=, ==, !=): metadata.name, metadata.namespace, spec.nodeName, status.phase")
	f.BoolVar(&opts.containers, "containers", false, "a row per container")
	f.StringVar(&opts.sortBy, "sort-by", "", "sort by cpu or memory, the largest first (default: by name)")
	f.BoolVar(&opts.noHeaders, "no-headers", false, "print no header row")
	f.BoolVar(&opts.sum, "sum", false, "print the sum of the rows' usage below them")
	return cmd
}

func (opts topPodsOptions) validate(name string) error {
	if err := validSortBy(opts.sortBy); err != nil {
		return err
	}
	switch {
	case name != "" && opts.selector != "":
		return errors.New("only one of NAME or --selector can be provided")
	case name != "" && opts.fieldSelector != "":
		return errors.New("only one of NAME or --field-selector can be provided")
	case name != "" && opts.allNamespaces:
		return errors.New("a pod cannot be named across all namespaces: drop -A, or give its namespace with -n")
	}
	return nil
}

func validSortBy(s string) error {
	switch s {
	case "", "cpu", "memory":
		return nil
	}
	return fmt.Errorf("--sort-by %q: use cpu or memory", s)
}

// topNodesOptions are skiff top nodes' flags.
type topNodesOptions struct {
	selector     string
	sortBy       string
	noHeaders    bool
	showCapacity bool
}

func newTopNodesCommand(o *Options) *cobra.Command {
	var opts topNodesOptions
	cmd := &cobra.Command{
		Use:     "nodes [NAME | -l SELECTOR]",
		Aliases: []string{"node", "no"},
		Short:   "Show the CPU and memory usage of nodes",
		Long: `Top nodes shows each node's CPU (millicores) and memory working set (MiB), everything running on
the machine, and what share of its allocatable CPU and memory that is (--show-capacity: of its
capacity). A node whose worker cannot be reached, or that is hollow, shows <unknown>.`,
		Example: `  skiff top nodes
  skiff top node w1
  skiff top nodes -l disk=ssd --sort-by=memory`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = strings.TrimPrefix(strings.TrimPrefix(args[0], "node/"), "nodes/")
			}
			if err := validSortBy(opts.sortBy); err != nil {
				return err
			}
			if name != "" && opts.selector != "" {
				return errors.New("only one of NAME or --selector can be provided")
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			return runTopNodes(ctx, c, opts, name, o.Out, o.ErrOut)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.selector, "selector", "l", "", "only nodes of this label selector: a=b, a!=b, a in (x,y), !a")
	f.StringVar(&opts.sortBy, "sort-by", "", "sort by cpu or memory, the largest first (default: by name)")
	f.BoolVar(&opts.noHeaders, "no-headers", false, "print no header row")
	f.BoolVar(&opts.showCapacity, "show-capacity", false, "percentages of the nodes' capacity instead of their allocatable resources")
	return cmd
}

// usage is CPU and memory in the units the API reports.
type usage struct {
	nanoCores uint64
	memory    uint64 // working set, bytes
}

func (u usage) add(v usage) usage {
	return usage{nanoCores: u.nanoCores + v.nanoCores, memory: u.memory + v.memory}
}

func usageOf(r *pb.ResourceUsage) usage {
	return usage{nanoCores: r.GetUsageNanoCores(), memory: r.GetMemoryWorkingSetBytes()}
}

// milli is CPU in millicores as kubectl prints it: rounded up.
func (u usage) milli() int64 {
	return resource.NewScaledQuantity(int64(u.nanoCores), resource.Nano).MilliValue()
}

// cpuString and memString are kubectl top's cells: 250m, 48Mi.
func (u usage) cpuString() string { return fmt.Sprintf("%dm", u.milli()) }
func (u usage) memString() string { return fmt.Sprintf("%dMi", u.memory/(1024*1024)) }

// podTop is a pod's usage: the sum of its containers'.
type podTop struct {
	namespace, name string
	containers      []containerTop
}

type containerTop struct {
	name string
	usage
}

func (p podTop) total() usage {
	var u usage
	for _, c := range p.containers {
		u = u.add(c.usage)
	}
	return u
}

// byUsage orders by sortBy, the largest first (0: equal, or no sortBy).
func byUsage(a, b usage, sortBy string) int {
	switch sortBy {
	case "cpu":
		return cmp.Compare(b.milli(), a.milli())
	case "memory":
		return cmp.Compare(b.memory, a.memory)
	}
	return 0
}

// printTopPods writes kubectl top pod's table; with sum, kubectl's two
// rows below it: a rule under the usage columns, then their totals.
func printTopPods(out io.Writer, pods []podTop, opts topPodsOptions) error {
	containers, withNamespace, noHeaders, sortBy := opts.containers, opts.allNamespaces, opts.noHeaders, opts.sortBy
	slices.SortStableFunc(pods, func(a, b podTop) int {
		return cmp.Or(byUsage(a.total(), b.total(), sortBy), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	tw := tabwriter.NewWriter(out, 3, 0, 3, ' ', 0)
	var h []string
	if withNamespace {
		h = append(h, "NAMESPACE")
	}
	if containers {
		h = append(h, "POD")
	}
	if !noHeaders {
		fmt.Fprintln(tw, strings.Join(append(h, "NAME", "CPU(cores)", "MEMORY(bytes)"), "\t"))
	}
	for _, p := range pods {
		var lead []string
		if withNamespace {
			lead = append(lead, p.namespace)
		}
		if !containers {
			u := p.total()
			fmt.Fprintln(tw, strings.Join(append(lead, p.name, u.cpuString(), u.memString()), "\t"))
			continue
		}
		cs := slices.Clone(p.containers)
		slices.SortStableFunc(cs, func(a, b containerTop) int {
			return cmp.Or(byUsage(a.usage, b.usage, sortBy), cmp.Compare(a.name, b.name))
		})
		for _, c := range cs {
			fmt.Fprintln(tw, strings.Join(append(slices.Clone(lead), p.name, c.name, c.cpuString(), c.memString()), "\t"))
		}
	}
	if opts.sum {
		var total usage
		for _, p := range pods {
			total = total.add(p.total())
		}
		blank := strings.Repeat("\t", len(h)+1) // under NAMESPACE, POD and NAME
		fmt.Fprintln(tw, blank+"________\t________")
		fmt.Fprintln(tw, blank+total.cpuString()+"\t"+total.memString())
	}
	return tw.Flush()
}

// nodeTop is a node's usage (known false: its worker did not answer)
// and what the percentages are of.
type nodeTop struct {
	name           string
	known          bool
	usage          usage
	cpu, memory    resource.Quantity // allocatable (or capacity)
	hasCPU, hasMem bool
}

// percent is kubectl's: usage over available, truncated.
func percent(used int64, avail resource.Quantity, has bool) string {
	if !has {
		return unknownUsage
	}
	f := 0.0
	if !avail.IsZero() {
		f = float64(used) / float64(avail.MilliValue()) * 100
	}
	return fmt.Sprintf("%d%%", int64(f))
}

// printTopNodes writes kubectl top node's table: the nodes with usage,
// then those without.
func printTopNodes(out io.Writer, nodes []nodeTop, noHeaders bool, sortBy string) error {
	slices.SortStableFunc(nodes, func(a, b nodeTop) int {
		switch {
		case a.known && !b.known:
			return -1
		case !a.known && b.known:
			return 1
		case !a.known:
			return cmp.Compare(a.name, b.name)
		}
		return cmp.Or(byUsage(a.usage, b.usage, sortBy), cmp.Compare(a.name, b.name))
	})
	tw := tabwriter.NewWriter(out, 3, 0, 3, ' ', 0)
	if !noHeaders {
		fmt.Fprintln(tw, "NAME\tCPU(cores)\tCPU(%)\tMEMORY(bytes)\tMEMORY(%)")
	}
	for _, n := range nodes {
		if !n.known {
			fmt.Fprintln(tw, strings.Join([]string{n.name, unknownUsage, unknownUsage, unknownUsage, unknownUsage}, "\t"))
			continue
		}
		memMilli := resource.NewQuantity(int64(n.usage.memory), resource.BinarySI).MilliValue()
		fmt.Fprintln(tw, strings.Join([]string{n.name,
			n.usage.cpuString(), percent(n.usage.milli(), n.cpu, n.hasCPU),
			n.usage.memString(), percent(memMilli, n.memory, n.hasMem)}, "\t"))
	}
	return tw.Flush()
}

// statsResult is one node's answer.
type statsResult struct {
	resp *pb.StatsResponse
	err  error
}

// statsOf asks every node in reqs (by node name) at once, topParallel at
// a time.
func statsOf(ctx context.Context, c topClient, reqs map[string]*pb.StatsRequest) map[string]statsResult {
	out := make(map[string]statsResult, len(reqs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, topParallel)
	for node, req := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			resp, err := c.Stats(ctx, req)
			mu.Lock()
			out[node] = statsResult{resp, err}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// warnNodes writes a warning per node that gave no usage, with what
// left out says is missing because of it; hollow nodes (Unimplemented,
// saying so) share one line, as a cluster may have thousands.
func warnNodes(errOut io.Writer, results map[string]statsResult, leftOut func(node string) string) {
	var failed, hollow []string
	for node, r := range results {
		if r.err != nil {
			failed = append(failed, node)
		}
	}
	slices.Sort(failed)
	for _, node := range failed {
		err := results[node].err
		if status.Code(err) == codes.Unimplemented && strings.Contains(status.Convert(err).Message(), " is hollow") {
			hollow = append(hollow, node)
			continue
		}
		fmt.Fprintf(errOut, "warning: no usage from node %s%s: %s\n", node, leftOut(node), errMessage(err))
	}
	if len(hollow) > 0 {
		names := strings.Join(hollow, ", ")
		if len(hollow) > 3 {
			names = strings.Join(hollow[:3], ", ") + fmt.Sprintf(" and %d more", len(hollow)-3)
		}
		fmt.Fprintf(errOut, "warning: no usage from hollow nodes (they run no containers): %s\n", names)
	}
}

// runTopPods lists the pods, asks each of their nodes for their usage and
// prints it.
func runTopPods(ctx context.Context, c topClient, opts topPodsOptions, name string, out, errOut io.Writer) error {
	ns := opts.namespace
	if opts.allNamespaces {
		ns = ""
	}
	var pods []*pb.Pod
	if name != "" {
		obj, err := c.Get(ctx, "Pod", ns, name, client.ReadOptions{})
		if err != nil {
			return apiError(err)
		}
		pods = append(pods, obj.GetPod())
	} else {
		objs, _, err := c.List(ctx, "Pod", client.ListOptions{Namespace: ns, LabelSelector: opts.selector, FieldSelector: opts.fieldSelector})
		if err != nil {
			return apiError(err)
		}
		for _, o := range objs {
			pods = append(pods, o.GetPod())
		}
	}
	if len(pods) == 0 {
		where := "in namespace " + ns
		if ns == "" {
			where = "in the cluster"
		}
		fmt.Fprintf(errOut, "No pods found %s.\n", where)
		return nil
	}
	// One request per node that runs any of the pods.
	reqs := map[string]*pb.StatsRequest{}
	podsOn := map[string]int{}
	for _, p := range pods {
		node := p.GetSpec().GetNodeName()
		if node == "" || p.GetStatus().GetPhase() == "Succeeded" || p.GetStatus().GetPhase() == "Failed" {
			continue
		}
		podsOn[node]++
		reqs[node] = &pb.StatsRequest{NodeName: node, Namespace: ns}
		if name != "" {
			reqs[node].Pod = name
		}
	}
	results := statsOf(ctx, c, reqs)
	byUID := map[string]*pb.PodUsage{}
	for _, r := range results {
		for _, pu := range r.resp.GetPods() {
			byUID[pu.GetUid()] = pu
		}
	}
	var rows []podTop
	for _, p := range pods {
		pu := byUID[p.GetMetadata().GetUid()]
		if pu == nil {
			continue
		}
		row := podTop{namespace: p.GetMetadata().GetNamespace(), name: p.GetMetadata().GetName()}
		for _, cu := range pu.GetContainers() {
			row.containers = append(row.containers, containerTop{name: cu.GetName(), usage: usageOf(cu.GetUsage())})
		}
		rows = append(rows, row)
	}
	if name != "" && len(rows) == 0 {
		return noPodUsage(pods[0], results)
	}
	warnNodes(errOut, results, func(node string) string {
		if podsOn[node] == 1 {
			return " (1 pod left out)"
		}
		return fmt.Sprintf(" (%d pods left out)", podsOn[node])
	})
	if len(rows) == 0 {
		return errors.New("metrics not available yet: none of these pods has a running container with usage to report (skiff get pods shows their state)")
	}
	return printTopPods(out, rows, opts)
}

// noPodUsage says why a named pod has no usage, and what to look at.
func noPodUsage(p *pb.Pod, results map[string]statsResult) error {
	ref := p.GetMetadata().GetNamespace() + "/" + p.GetMetadata().GetName()
	node := p.GetSpec().GetNodeName()
	r, asked := results[node]
	switch {
	case node == "":
		return fmt.Errorf("metrics not available yet: pod %s is not scheduled to a node (skiff describe pod %s shows why)", ref, p.GetMetadata().GetName())
	case !asked:
		return fmt.Errorf("pod %s has %s: it runs no containers", ref, strings.ToLower(p.GetStatus().GetPhase()))
	case status.Code(r.err) == codes.Unimplemented:
		return fmt.Errorf("no usage for pod %s: %s", ref, errMessage(r.err))
	case r.err != nil && status.Code(r.err) != codes.NotFound:
		return fmt.Errorf("no usage for pod %s: %s", ref, errMessage(r.err))
	}
	return fmt.Errorf("metrics not available yet: pod %s has no running container on node %s (skiff describe pod %s shows why)", ref, node, p.GetMetadata().GetName())
}

// runTopNodes lists the nodes, asks each for its usage and prints it.
func runTopNodes(ctx context.Context, c topClient, opts topNodesOptions, name string, out, errOut io.Writer) error {
	var nodes []*pb.Node
	if name != "" {
		obj, err := c.Get(ctx, "Node", "", name, client.ReadOptions{})
		if err != nil {
			return apiError(err)
		}
		nodes = append(nodes, obj.GetNode())
	} else {
		objs, _, err := c.List(ctx, "Node", client.ListOptions{LabelSelector: opts.selector})
		if err != nil {
			return apiError(err)
		}
		for _, o := range objs {
			nodes = append(nodes, o.GetNode())
		}
	}
	if len(nodes) == 0 {
		fmt.Fprintln(errOut, "No nodes found in the cluster.")
		return nil
	}
	reqs := map[string]*pb.StatsRequest{}
	for _, n := range nodes {
		reqs[n.GetMetadata().GetName()] = &pb.StatsRequest{NodeName: n.GetMetadata().GetName(), NodeOnly: true}
	}
	results := statsOf(ctx, c, reqs)
	rows := make([]nodeTop, 0, len(nodes))
	for _, n := range nodes {
		row := nodeTop{name: n.GetMetadata().GetName()}
		avail := n.GetStatus().GetAllocatable()
		if opts.showCapacity || len(avail) == 0 {
			avail = n.GetStatus().GetCapacity()
		}
		if q, err := resource.ParseQuantity(avail["cpu"]); err == nil {
			row.cpu, row.hasCPU = q, true
		}
		if q, err := resource.ParseQuantity(avail["memory"]); err == nil {
			row.memory, row.hasMem = q, true
		}
		if r := results[row.name]; r.err == nil && r.resp.GetNode() != nil {
			row.known, row.usage = true, usageOf(r.resp.GetNode())
		}
		rows = append(rows, row)
	}
	warnNodes(errOut, results, func(string) string { return "" })
	return printTopNodes(out, rows, opts.noHeaders, opts.sortBy)
}
