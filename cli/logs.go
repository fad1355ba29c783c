package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// defaultContainerAnnotation names the container that logs and exec use
// when none is given, as kubectl reads it.
const defaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

type logsOptions struct {
	namespace, container, selector string
	follow, previous, timestamps   bool
	allContainers, prefix          bool
	tail                           int64
	maxRequests                    int
	since                          time.Duration
	sinceTime                      string
	limitBytes                     int64
	sinceUnixNano                  *int64 // from --since or --since-time, set by checkLimits
}

func newLogsCommand(o *Options) *cobra.Command {
	l := &logsOptions{}
	cmd := &cobra.Command{
		Use:   "logs (POD | KIND/NAME | -l SELECTOR) [-c CONTAINER]",
		Short: "Print the logs of a container in a pod",
		Long: `Logs prints what a container wrote to stdout and stderr. The masters relay it from the
worker that runs the pod, so only the masters' API needs to be reachable.

KIND/NAME (deployment, replicaset, daemonset, job) picks one of the workload's pods, a running
and ready one first. -l prints the logs of every pod the selector matches (the last 10 lines of
each unless --tail says otherwise, as kubectl). Without -c, a pod's default container is the one
its kubectl.kubernetes.io/default-container annotation names, else its first.`,
		Example: `  skiff logs web
  skiff logs web -c sidecar --tail 20
  skiff logs web -f
  skiff logs web --previous      # the instance before the last restart
  skiff logs web --since=1h      # only the lines of the last hour
  skiff logs web --since-time=2026-01-02T15:04:05Z
  skiff logs web --limit-bytes=500
  skiff logs deployment/web --all-containers
  skiff logs -l app=web --prefix -f`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (l.selector != "") {
				return fmt.Errorf("name a pod, a workload (KIND/NAME) or a selector (-l), one of them: skiff logs web, skiff logs deployment/web, skiff logs -l app=web")
			}
			if l.allContainers && l.container != "" {
				return fmt.Errorf("--all-containers and --container (-c) exclude each other")
			}
			if err := l.checkLimits(cmd.Flags().Changed, time.Now()); err != nil {
				return err
			}
			if !cmd.Flags().Changed("tail") && l.selector != "" {
				l.tail = 10
			}
			return runLogs(o, l, args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&l.namespace, "namespace", "n", "default", "namespace of the pod")
	f.StringVarP(&l.container, "container", "c", "", "container name (default: the pod's default container)")
	f.StringVarP(&l.selector, "selector", "l", "", "print the logs of every pod with these labels: a=b, a!=b, a in (x,y), !a")
	f.BoolVar(&l.allContainers, "all-containers", false, "print the logs of every container of the pods, init containers first")
	f.BoolVar(&l.prefix, "prefix", false, "prefix each line with [pod/NAME/CONTAINER]")
	f.IntVar(&l.maxRequests, "max-log-requests", 5, "with -f, how many logs may be followed at once")
	f.BoolVarP(&l.follow, "follow", "f", false, "keep printing as the container writes, until it exits (Ctrl-C stops)")
	f.BoolVarP(&l.previous, "previous", "p", false, "print the logs of the previous instance of a restarted container")
	f.BoolVar(&l.timestamps, "timestamps", false, "prefix each line with its time")
	f.Int64Var(&l.tail, "tail", -1, "print only the last N lines (-1: all; 10 with -l)")
	f.DurationVar(&l.since, "since", 0, "print only the lines newer than this duration, such as 5s, 2m or 3h (excludes --since-time)")
	f.StringVar(&l.sinceTime, "since-time", "", "print only the lines written at or after this RFC3339 time, such as 2026-01-02T15:04:05Z (excludes --since)")
	f.Int64Var(&l.limitBytes, "limit-bytes", 0, "print at most this many bytes of each container's log (default: no limit)")
	return cmd
}

// checkLimits validates --since, --since-time and --limit-bytes, as
// kubectl does, and sets sinceUnixNano; --since counts back from now.
// changed reports whether a flag was given.
func (l *logsOptions) checkLimits(changed func(flag string) bool, now time.Time) error {
	since, sinceTime := changed("since"), changed("since-time")
	switch {
	case since && sinceTime:
		return fmt.Errorf("at most one of --since and --since-time may be used")
	case since:
		if l.since <= 0 {
			return fmt.Errorf("--since=%s: must be greater than 0, such as 5s, 2m or 3h", l.since)
		}
		n := now.Add(-l.since).UnixNano()
		l.sinceUnixNano = &n
	case sinceTime:
		t, err := time.Parse(time.RFC3339, l.sinceTime)
		if err != nil {
			return fmt.Errorf("--since-time=%q: not an RFC3339 time: use the form 2006-01-02T15:04:05Z or 2006-01-02T15:04:05+01:00", l.sinceTime)
		}
		n := t.UnixNano()
		l.sinceUnixNano = &n
	}
	if changed("limit-bytes") && l.limitBytes <= 0 {
		return fmt.Errorf("--limit-bytes=%d: must be greater than 0 (leave it out for no limit)", l.limitBytes)
	}
	return nil
}

// logSource is one container's log to print.
type logSource struct {
	pod       *pb.Object
	container string
}

func runLogs(o *Options, l *logsOptions, args []string) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := o.context()
	defer cancel()
	pods, err := logPods(ctx, o, c, l, args)
	if err != nil {
		return err
	}
	var sources []logSource
	for _, p := range pods {
		names, err := logContainers(o.ErrOut, p, l)
		if err != nil {
			return err
		}
		for _, n := range names {
			sources = append(sources, logSource{pod: p, container: n})
		}
	}
	if l.follow && len(sources) > l.maxRequests {
		return fmt.Errorf("you are attempting to follow %d log streams, but the maximum allowed concurrency is %d: use --max-log-requests to raise it", len(sources), l.maxRequests)
	}
	if l.follow {
		cancel()
		ctx, cancel = interruptible()
		defer cancel()
	}
	prefix := l.prefix
	out := &lockedWriter{w: o.Out}
	if !l.follow {
		// One after the other, in order.
		for _, s := range sources {
			if err := streamLog(ctx, c, l, s, out, prefix); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, len(sources))
	var wg sync.WaitGroup
	for i, s := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = streamLog(ctx, c, l, s, out, prefix)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// logPods resolves the command's arguments to pods.
func logPods(ctx context.Context, o *Options, c *client.Client, l *logsOptions, args []string) ([]*pb.Object, error) {
	if l.selector != "" {
		pods, _, err := c.List(ctx, "Pod", client.ListOptions{Namespace: l.namespace, LabelSelector: l.selector})
		if err != nil {
			return nil, apiError(err)
		}
		if len(pods) == 0 {
			return nil, fmt.Errorf("no pods in namespace %s match %q", l.namespace, l.selector)
		}
		sort.Slice(pods, func(i, j int) bool { return pods[i].Meta().GetName() < pods[j].Meta().GetName() })
		return pods, nil
	}
	arg := args[0]
	kind, name, ok := strings.Cut(arg, "/")
	if !ok {
		kind, name = "pod", arg
	}
	info, err := lookupKind(kind)
	if err != nil {
		return nil, err
	}
	if info.Kind == "Pod" {
		pod, err := c.Get(ctx, "Pod", l.namespace, name, client.ReadOptions{})
		if err != nil {
			return nil, apiError(err)
		}
		return []*pb.Object{pod}, nil
	}
	obj, err := c.Get(ctx, info.Kind, l.namespace, name, client.ReadOptions{})
	if err != nil {
		return nil, apiError(err)
	}
	var sel *pb.LabelSelector
	switch {
	case obj.GetDeployment() != nil:
		sel = obj.GetDeployment().GetSpec().GetSelector()
	case obj.GetReplicaSet() != nil:
		sel = obj.GetReplicaSet().GetSpec().GetSelector()
	case obj.GetDaemonSet() != nil:
		sel = obj.GetDaemonSet().GetSpec().GetSelector()
	case obj.GetJob() != nil:
		sel = obj.GetJob().GetSpec().GetSelector()
	default:
		return nil, fmt.Errorf("%s have no pods to print the logs of: name a pod, a deployment, replicaset, daemonset or job", info.Plural)
	}
	all, _, err := c.List(ctx, "Pod", client.ListOptions{Namespace: l.namespace})
	if err != nil {
		return nil, apiError(err)
	}
	var pods []*pb.Object
	for _, p := range all {
		if sel.Matches(p.Meta().GetLabels()) {
			pods = append(pods, p)
		}
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("%s has no pods", objectRef(obj))
	}
	pod := pickPod(pods)
	if len(pods) > 1 {
		fmt.Fprintf(o.ErrOut, "Found %d pods, using pod/%s\n", len(pods), pod.Meta().GetName())
	}
	return []*pb.Object{pod}, nil
}

// pickPod chooses the pod whose logs a workload's name stands for: ready
// before not, running before pending, then the oldest, as kubectl does.
func pickPod(pods []*pb.Object) *pb.Object {
	rank := func(o *pb.Object) int {
		st := o.GetPod().GetStatus()
		switch {
		case st.GetPhase() == "Running" && podReady(st):
			return 0
		case st.GetPhase() == "Running":
			return 1
		case st.GetPhase() == "Pending":
			return 2
		}
		return 3
	}
	sort.SliceStable(pods, func(i, j int) bool {
		ri, rj := rank(pods[i]), rank(pods[j])
		if ri != rj {
			return ri < rj
		}
		ti, tj := pods[i].Meta().GetCreationTimestamp().AsTime(), pods[j].Meta().GetCreationTimestamp().AsTime()
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return pods[i].Meta().GetName() < pods[j].Meta().GetName()
	})
	return pods[0]
}

func podReady(st *pb.PodStatus) bool {
	for _, c := range st.GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() == "True"
		}
	}
	return false
}

// logContainers returns the containers of pod to print: -c, every one
// (--all-containers), or the default one, saying so when the pod has
// others (kubectl's notice, on stderr).
func logContainers(errOut io.Writer, pod *pb.Object, l *logsOptions) ([]string, error) {
	spec := pod.GetPod().GetSpec()
	var names []string
	for _, c := range append(append([]*pb.Container{}, spec.GetInitContainers()...), spec.GetContainers()...) {
		names = append(names, c.GetName())
	}
	switch {
	case l.container != "":
		return []string{l.container}, nil
	case l.allContainers:
		return names, nil
	}
	var app []string
	for _, c := range spec.GetContainers() {
		app = append(app, c.GetName())
	}
	if len(app) == 0 {
		return nil, fmt.Errorf("pod/%s has no containers", pod.Meta().GetName())
	}
	chosen := app[0]
	if d := pod.Meta().GetAnnotations()[defaultContainerAnnotation]; d != "" {
		for _, n := range names {
			if n == d {
				chosen = d
			}
		}
	}
	if len(names) > 1 {
		fmt.Fprintf(errOut, "Defaulted container %q out of: %s\n", chosen, strings.Join(names, ", "))
	}
	return []string{chosen}, nil
}

// streamLog prints one container's log, each line prefixed with
// [pod/NAME/CONTAINER] when prefix is set.
func streamLog(ctx context.Context, c *client.Client, l *logsOptions, s logSource, out *lockedWriter, prefix bool) error {
	m := s.pod.Meta()
	req := &pb.LogsRequest{Namespace: m.GetNamespace(), Pod: m.GetName(), Container: s.container,
		Follow: l.follow, Previous: l.previous, Timestamps: l.timestamps}
	if l.tail >= 0 {
		req.TailLines = &l.tail
	}
	req.SinceUnixNano = l.sinceUnixNano
	if l.limitBytes > 0 {
		req.LimitBytes = &l.limitBytes
	}
	w := &lineWriter{out: out}
	if prefix {
		w.prefix = fmt.Sprintf("[pod/%s/%s] ", m.GetName(), s.container)
	}
	err := c.Logs(ctx, req, w)
	w.flush()
	return apiError(err)
}

// lockedWriter lets several log streams write whole lines to one output.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) write(p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Write(p)
}

// lineWriter passes on whole lines, each with its prefix; flush writes a
// last line without its newline.
type lineWriter struct {
	out     *lockedWriter
	prefix  string
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	w.partial = append(w.partial, p...)
	i := bytes.LastIndexByte(w.partial, '\n')
	if i < 0 {
		return n, nil
	}
	lines := w.partial[:i+1]
	if w.prefix != "" {
		var b bytes.Buffer
		for _, line := range bytes.SplitAfter(lines, []byte("\n")) {
			if len(line) > 0 {
				b.WriteString(w.prefix)
				b.Write(line)
			}
		}
		lines = b.Bytes()
	}
	w.out.write(lines)
	w.partial = append(w.partial[:0], w.partial[i+1:]...)
	return n, nil
}

func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.out.write(append([]byte(w.prefix), w.partial...))
		w.partial = nil
	}
}
