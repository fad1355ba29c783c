package e2e

// The chaos suite, workload scenario (issue 7, item 4): a Deployment on
// hollow and real workers keeps converging while the leader is SIGKILLed
// over and over and the Deployment is scaled and rolled through the client.
// A watch on its pods, resumed across failovers, records every change; the
// history is replayed afterwards to check the rollout bounds Kubernetes
// guarantees at every instant, and the end state is checked for exactness
// (ready pods of the newest template, no orphans, no pods on missing nodes,
// one container per pod on the real worker).
//
// The helpers here (cluster with extra master flags, resumable watch,
// Deployment writes, bound replay, end-state checks) also serve the worker
// loss scenario in chaos_workers_test.go.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// chaosBoundLag is how long after a Deployment's spec changed a controller
// may still act on the spec before it: its informer delivers the change a
// moment later. The bound checks allow, for a pod created or deleted at
// time T, the spec current at T and any spec replaced less than this
// before T.
const chaosBoundLag = 2 * time.Second

// startChaosClusterArgs starts three masters with extra flags (the
// eviction timings of the worker scenarios) as a chaosCluster, and waits
// until they have a leader and agree.
func startChaosClusterArgs(t *testing.T, extra ...string) *chaosCluster {
	t.Helper()
	// Secure unless extra asks for --insecure: hollow workers get their
	// own certificates like real ones.
	c := startClusterArgs(t, 3, extra...)
	cc := &chaosCluster{cluster: c, t: t, origin: time.Now(),
		conns: map[string]*grpc.ClientConn{}, pinned: map[string]*client.Client{},
		paused: map[string]bool{}, running: map[string]bool{}}
	for _, m := range c.masters {
		cc.running[m.name] = true
	}
	t.Cleanup(func() {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		for _, conn := range cc.conns {
			conn.Close()
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			cc.keepLogs()
		}
	})
	if _, err := cc.waitHealthy(90*time.Second, c.masters); err != nil {
		t.Fatalf("cluster did not come up: %v", err)
	}
	return cc
}

// chaosNeedRoot fails the test when it cannot run real containers: the
// scenarios are about real workers, and silently testing less would hide
// that.
func chaosNeedRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this chaos scenario runs real containers on a real worker: run it as root")
	}
}

// chaosKeepWorkerLogs copies the workers' logs out of the test's temp dirs
// when the test fails (registered after the workers start, so it runs
// before their cleanup removes them).
func chaosKeepWorkerLogs(t *testing.T, ws map[string]*workerProc) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir, err := os.MkdirTemp("", "skiff-chaos-worker-logs-"+sanitize(t.Name())+"-")
		if err != nil {
			t.Logf("keep worker logs: %v", err)
			return
		}
		for n, w := range ws {
			if b, err := os.ReadFile(w.logPath); err == nil {
				_ = os.WriteFile(filepath.Join(dir, n+".log"), b, 0o644)
			}
		}
		t.Logf("workers' logs kept in %s", dir)
	})
}

// chaosRetag pushes the image ref points at under another tag of the same
// loopback registry, so that a rolling update can change the image.
func chaosRetag(t *testing.T, ref, tag string) string {
	t.Helper()
	src, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(src)
	if err != nil {
		t.Fatalf("read image %s: %v", ref, err)
	}
	out := src.Context().Name() + ":" + tag
	dst, err := name.ParseReference(out, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img); err != nil {
		t.Fatalf("push %s: %v", out, err)
	}
	return out
}

// chaosFlag returns the value of a flag in a process's argv.
func chaosFlag(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// chaosRuntime opens a real worker's container runtime over its state
// directories, read-only in effect: the checks only list.
func chaosRuntime(t *testing.T, w *workerProc) *wrt.Runtime {
	t.Helper()
	dataDir, cg := chaosFlag(w.args, "--data-dir"), chaosFlag(w.args, "--cgroup-parent")
	cfg := wrt.DefaultConfig()
	cfg.DataDir = filepath.Join(dataDir, "runtime")
	cfg.StateDir = filepath.Join(dataDir, "state")
	cfg.CgroupParent = cg
	cfg.ShimCommand = []string{skiffBin, shim.Subcommand}
	cfg.Logger = quietLogger()
	rt, err := wrt.New(cfg)
	if err != nil {
		t.Fatalf("open the worker's runtime: %v", err)
	}
	return rt
}

// --- the Deployment ---

// chaosDeployment is the scenarios' Deployment: one container of the demo
// image (hollow workers only pretend to run it).
func chaosDeployment(name, image string, replicas int32, surge, unavailable string) *pb.Object {
	labels := map[string]string{"app": name}
	grace := int64(1)
	return pb.Wrap(&pb.Deployment{
		ApiVersion: "apps/v1", Kind: "Deployment",
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default"},
		Spec: &pb.DeploymentSpec{
			Replicas: gproto.Int32(replicas),
			Selector: &pb.LabelSelector{MatchLabels: labels},
			Strategy: &pb.DeploymentStrategy{Type: "RollingUpdate",
				RollingUpdate: &pb.RollingUpdateDeployment{MaxSurge: surge, MaxUnavailable: unavailable}},
			Template: &pb.PodTemplateSpec{
				Metadata: &pb.ObjectMeta{Labels: labels},
				Spec: &pb.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers: []*pb.Container{{
						Name: "app", Image: image,
						Env:       []*pb.EnvVar{{Name: "GREETING", Value: "v0"}},
						Resources: &pb.ResourceRequirements{Requests: map[string]string{"cpu": "10m", "memory": "16Mi"}},
					}},
				},
			},
		},
	})
}

func chaosEnv(d *pb.Deployment, key string) string {
	for _, e := range d.GetSpec().GetTemplate().GetSpec().GetContainers()[0].GetEnv() {
		if e.GetName() == key {
			return e.GetValue()
		}
	}
	return ""
}

func chaosSetEnv(d *pb.Deployment, key, value string) {
	c := d.GetSpec().GetTemplate().GetSpec().GetContainers()[0]
	for _, e := range c.GetEnv() {
		if e.GetName() == key {
			e.Value = value
			return
		}
	}
	c.Env = append(c.Env, &pb.EnvVar{Name: key, Value: value})
}

// chaosIntOrPercent resolves maxSurge (up) or maxUnavailable (down) for
// replicas, as Kubernetes does.
func chaosIntOrPercent(v string, replicas int32, up bool) int32 {
	if p, ok := strings.CutSuffix(v, "%"); ok {
		n, _ := strconv.Atoi(p)
		f := float64(n) * float64(replicas) / 100
		if up {
			return int32(math.Ceil(f))
		}
		return int32(math.Floor(f))
	}
	n, _ := strconv.Atoi(v)
	return int32(n)
}

// chaosSpecVersion is a Deployment's spec as far as the bounds go.
type chaosSpecVersion struct {
	RV                       uint64
	Seen                     time.Time // when the watch delivered it
	Replicas, Surge, Unavail int32
}

// chaosFenceposts are the Deployment's replicas, maxSurge and
// maxUnavailable as pod counts (defaults 25%, unavailable 1 if both are 0).
func chaosFenceposts(d *pb.Deployment) (replicas, surge, unavailable int32) {
	replicas = 1
	if d.GetSpec().Replicas != nil {
		replicas = d.GetSpec().GetReplicas()
	}
	ru := d.GetSpec().GetStrategy().GetRollingUpdate()
	ms, mu := ru.GetMaxSurge(), ru.GetMaxUnavailable()
	if ms == "" {
		ms = "25%"
	}
	if mu == "" {
		mu = "25%"
	}
	surge, unavailable = chaosIntOrPercent(ms, replicas, true), chaosIntOrPercent(mu, replicas, false)
	if surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return replicas, surge, min(unavailable, replicas)
}

// chaosSpecVersions extracts the distinct specs of Deployment dep from its
// watch history.
func chaosSpecVersions(events []chaosObjEvent, dep string) []chaosSpecVersion {
	var out []chaosSpecVersion
	for _, ev := range events {
		d := ev.Obj.GetDeployment()
		if d == nil || d.GetMetadata().GetName() != dep || ev.Type == "DELETED" {
			continue
		}
		r, s, u := chaosFenceposts(d)
		if n := len(out); n > 0 && out[n-1].Replicas == r && out[n-1].Surge == s && out[n-1].Unavail == u {
			continue
		}
		out = append(out, chaosSpecVersion{RV: ev.RV, Seen: ev.At, Replicas: r, Surge: s, Unavail: u})
	}
	return out
}

// chaosWindow returns the spec versions a controller may have acted on
// for a change at index rv, made at time at: the one current at rv and
// those replaced less than chaosBoundLag before at (a replacement is dated
// by when the watch delivered it, never earlier than it happened, so the
// window errs on the side of more versions).
func chaosWindow(vs []chaosSpecVersion, rv uint64, at time.Time, lag time.Duration) []chaosSpecVersion {
	cur := -1
	for i, v := range vs {
		if v.RV <= rv {
			cur = i
		}
	}
	if cur < 0 {
		return nil
	}
	out := []chaosSpecVersion{vs[cur]}
	for i := cur - 1; i >= 0; i-- {
		if vs[i+1].Seen.Before(at.Add(-lag)) {
			break
		}
		out = append(out, vs[i])
	}
	return out
}

// chaosBounds is what the replay of a Deployment's pod history found.
type chaosBounds struct {
	Creations    int      `json:"creations_checked"`
	Deletions    int      `json:"ready_deletions_checked"`
	Unchecked    int      `json:"events_unchecked"` // synthesized by a relist, or before the first spec
	MaxActive    int      `json:"max_active_pods"`
	MaxOverBound int      `json:"max_over_surge_bound"` // active - (replicas+maxSurge) at a creation; <= 0 is within bounds
	MinAvailable int      `json:"min_ready_after_deletion"`
	Violations   []string `json:"violations,omitempty"`
}

// chaosCheckBounds replays the pods' history and checks, as Kubernetes
// guarantees for a RollingUpdate Deployment:
//
//   - surge: when a pod is created, the pods that are neither terminating
//     nor finished number at most replicas + maxSurge (the most any spec in
//     the creation's window allows);
//   - availability: when a ready pod starts terminating while the spec's
//     replicas stay the same, and at least replicas - maxUnavailable pods
//     were ready before (the rollout had been complete), at least that many
//     are ready after.
//
// Involuntary losses (a node going away) are not deletions by the
// controllers and are not in the availability check's scope: scenario 4
// kills no worker.
func chaosCheckBounds(pods []chaosObjEvent, vs []chaosSpecVersion, lag time.Duration) chaosBounds {
	res := chaosBounds{MinAvailable: -1}
	state := map[string]*pb.Pod{}
	counts := func() (active, ready int) {
		for _, p := range state {
			if p.GetMetadata().GetDeletionTimestamp() == nil && !chaosTerminal(p) {
				active++
				if chaosReady(p) {
					ready++
				}
			}
		}
		return active, ready
	}
	for i := 0; i < len(pods); {
		j := i
		for j < len(pods) && pods[j].RV == pods[i].RV {
			j++
		}
		group := pods[i:j]
		i = j
		_, readyBefore := counts()
		wasReady := map[string]bool{}
		for uid, p := range state {
			if p.GetMetadata().GetDeletionTimestamp() == nil && !chaosTerminal(p) && chaosReady(p) {
				wasReady[uid] = true
			}
		}
		var created *pb.Pod
		var relist bool
		var lastAt time.Time
		for _, ev := range group {
			p := ev.Obj.GetPod()
			uid := p.GetMetadata().GetUid()
			relist = relist || ev.Relist
			lastAt = ev.At
			switch ev.Type {
			case "DELETED":
				delete(state, uid)
			case "ADDED":
				state[uid] = p
				if p.GetMetadata().GetDeletionTimestamp() == nil && !ev.Relist {
					created = p
				}
			default:
				state[uid] = p
			}
		}
		active, readyAfter := counts()
		res.MaxActive = max(res.MaxActive, active)
		rv := group[0].RV
		if relist {
			res.Unchecked += len(group)
			continue
		}
		if created != nil {
			at := lastAt
			if ts := created.GetMetadata().GetCreationTimestamp(); ts != nil {
				at = ts.AsTime()
			}
			win := chaosWindow(vs, rv, at, lag)
			if len(win) == 0 {
				res.Unchecked++
			} else {
				res.Creations++
				bound := 0
				for _, v := range win {
					bound = max(bound, int(v.Replicas+v.Surge))
				}
				over := active - bound
				if res.Creations == 1 || over > res.MaxOverBound {
					res.MaxOverBound = over
				}
				if over > 0 {
					res.Violations = append(res.Violations, fmt.Sprintf(
						"surge bound exceeded at index %d: pod %s created while %d pods were active, replicas+maxSurge allows %d",
						rv, created.GetMetadata().GetName(), active, bound))
				}
			}
		}
		lostReady := 0
		for uid := range wasReady {
			p, ok := state[uid]
			if !ok || p.GetMetadata().GetDeletionTimestamp() != nil {
				lostReady++
			}
		}
		if lostReady == 0 {
			continue
		}
		win := chaosWindow(vs, rv, lastAt, lag)
		if len(win) == 0 {
			continue
		}
		steady := true
		for _, v := range win {
			steady = steady && v.Replicas == win[0].Replicas
		}
		floor := int(win[0].Replicas - win[0].Unavail)
		if !steady || readyBefore < floor {
			continue
		}
		res.Deletions++
		if res.MinAvailable < 0 || readyAfter < res.MinAvailable {
			res.MinAvailable = readyAfter
		}
		if readyAfter < floor {
			res.Violations = append(res.Violations, fmt.Sprintf(
				"availability bound broken at index %d: a deletion left %d ready pods (from %d), replicas-maxUnavailable is %d",
				rv, readyAfter, readyBefore, floor))
		}
	}
	return res
}

func chaosReady(p *pb.Pod) bool {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() == "True"
		}
	}
	return false
}

func chaosTerminal(p *pb.Pod) bool {
	ph := p.GetStatus().GetPhase()
	return ph == "Succeeded" || ph == "Failed"
}

// --- a resumable watch ---

// chaosObjEvent is one change a chaosWatch saw.
type chaosObjEvent struct {
	Type   string // ADDED, MODIFIED, DELETED
	RV     uint64
	At     time.Time // when it arrived
	Obj    *pb.Object
	Relist bool // made up from a relist after the watch expired
}

// chaosWatch keeps a watch on one kind open for a whole scenario, through
// a client of every master: the client resumes it on another master when
// the one serving it dies, and when even that fails (no master answered
// for the client's retry period) this reopens it from the last index it
// delivered, or relists if that history is gone. Events sharing one index
// (a batch of binds is one Raft entry) are delivered once across a reopen.
type chaosWatch struct {
	cl   *client.Client
	kind string
	opts client.WatchOptions

	mu         sync.Mutex
	events     []chaosObjEvent
	known      map[string]*pb.Object // by name, as last seen
	last       uint64
	seenAtLast int
	reopens    int
	relists    int
	lastErr    error

	cancel context.CancelFunc
	done   chan struct{}
}

func startChaosWatch(cc *chaosCluster, kind, namespace, selector string) *chaosWatch {
	w := &chaosWatch{cl: cc.newClient(cc.apiAddrs()), kind: kind, known: map[string]*pb.Object{},
		opts: client.WatchOptions{Namespace: namespace, LabelSelector: selector, BookmarkSeconds: 1}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	cc.t.Cleanup(w.stop)
	if err := w.list(ctx, false); err != nil {
		cc.t.Fatalf("list %s before watching: %v", kind, err)
	}
	go w.run(ctx)
	return w
}

func (w *chaosWatch) stop() {
	w.cancel()
	<-w.done
}

// list reads every object and, after the first time, makes up the events
// the expired watch missed.
func (w *chaosWatch) list(ctx context.Context, relist bool) error {
	var items []*pb.Object
	var rv uint64
	err := chaosRetry(ctx, 30*time.Second, func(ctx context.Context) error {
		var err error
		items, rv, err = w.cl.List(ctx, w.kind, client.ListOptions{Namespace: w.opts.Namespace, LabelSelector: w.opts.LabelSelector})
		return err
	})
	if err != nil {
		return err
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := map[string]bool{}
	for _, it := range items {
		n := it.Meta().GetName()
		seen[n] = true
		old, ok := w.known[n]
		switch {
		case !ok:
			w.events = append(w.events, chaosObjEvent{Type: "ADDED", RV: rv, At: now, Obj: it, Relist: relist})
		case old.Meta().GetResourceVersion() != it.Meta().GetResourceVersion():
			w.events = append(w.events, chaosObjEvent{Type: "MODIFIED", RV: rv, At: now, Obj: it, Relist: true})
		}
		w.known[n] = it
	}
	for n, old := range w.known {
		if !seen[n] {
			w.events = append(w.events, chaosObjEvent{Type: "DELETED", RV: rv, At: now, Obj: old, Relist: true})
			delete(w.known, n)
		}
	}
	if relist {
		w.relists++
	}
	w.last, w.seenAtLast = rv, 0
	return nil
}

func (w *chaosWatch) run(ctx context.Context) {
	defer close(w.done)
	for ctx.Err() == nil {
		w.mu.Lock()
		from, skip := w.last, 0
		if w.seenAtLast > 0 {
			from, skip = w.last-1, w.seenAtLast
		}
		w.mu.Unlock()
		opts := w.opts
		opts.ResourceVersion = from
		watcher, err := w.cl.Watch(ctx, w.kind, opts)
		if err == nil {
			err = w.consume(ctx, watcher, skip)
			watcher.Close()
		}
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		w.lastErr = err
		w.mu.Unlock()
		if errors.Is(err, client.ErrExpired) {
			if err := w.list(ctx, true); err != nil && ctx.Err() == nil {
				w.mu.Lock()
				w.lastErr = err
				w.mu.Unlock()
			}
			continue
		}
		w.mu.Lock()
		w.reopens++
		w.mu.Unlock()
		// Back off a little before trying again (not synchronisation: the
		// masters are down or electing).
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (w *chaosWatch) consume(ctx context.Context, watcher *client.Watcher, skip int) error {
	for {
		ev, err := watcher.Next(ctx)
		if err != nil {
			// A bookmark moves the resume point on.
			w.mu.Lock()
			if rv := watcher.ResourceVersion(); rv > w.last {
				w.last, w.seenAtLast = rv, 0
			}
			w.mu.Unlock()
			return err
		}
		rv := ev.GetResourceVersion()
		w.mu.Lock()
		if rv == w.last && skip > 0 {
			skip--
			w.mu.Unlock()
			continue
		}
		if rv == w.last {
			w.seenAtLast++
		} else if rv > w.last {
			w.last, w.seenAtLast = rv, 1
		}
		obj := ev.GetObject()
		w.events = append(w.events, chaosObjEvent{Type: ev.GetType(), RV: rv, At: time.Now(), Obj: obj})
		if ev.GetType() == "DELETED" {
			delete(w.known, obj.Meta().GetName())
		} else {
			w.known[obj.Meta().GetName()] = obj
		}
		w.mu.Unlock()
	}
}

// history returns the events so far.
func (w *chaosWatch) history() []chaosObjEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]chaosObjEvent(nil), w.events...)
}

// waitFor polls until the watch has delivered index rv.
func (w *chaosWatch) waitFor(rv uint64, within time.Duration) error {
	return poll(within, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.last < rv {
			return fmt.Errorf("the %s watch delivered up to index %d of %d (last error: %v)", w.kind, w.last, rv, w.lastErr)
		}
		return nil
	})
}

func (w *chaosWatch) stats() (events, reopens, relists int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events), w.reopens, w.relists
}

// chaosRetry calls f with a short timeout until it succeeds or within
// passes.
func chaosRetry(ctx context.Context, within time.Duration, f func(ctx context.Context) error) error {
	deadline := time.Now().Add(within)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(cctx)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// --- writes to the Deployment ---

// chaosOps issues the scenario's changes to a Deployment as a user would
// (read, change, write with the read resourceVersion as precondition) and
// keeps count of them.
type chaosOps struct {
	cl   *client.Client
	name string
	// ctx ends with the test: a scenario that failed halfway does not
	// leave its writer waiting out its deadlines.
	ctx context.Context

	mu       sync.Mutex
	writes   int // Update calls
	acked    int
	unknown  int // outcome unknown (then settled by reading)
	conflict int
	// notApplied: refused before reaching the log (retried).
	notApplied int
	// unknownApplied: unknown outcomes that a read showed applied.
	unknownApplied int
	acks           []chaosAck
	last           map[string]chaosAck // the last acknowledged change per field
}

// chaosAck is an acknowledged write: the index it was applied at and what
// it set.
type chaosAck struct {
	RV    uint64
	Field string // replicas or template
	Desc  string
	Has   func(*pb.Deployment) bool
}

func newChaosOps(t *testing.T, cl *client.Client, name string) *chaosOps {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &chaosOps{cl: cl, name: name, ctx: ctx, last: map[string]chaosAck{}}
}

// change applies set to the Deployment until a write of it is
// acknowledged, or a read shows that a write whose outcome was unknown
// took effect. It gives up after within.
func (o *chaosOps) change(field, desc string, set func(*pb.Deployment), has func(*pb.Deployment) bool, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		var cur *pb.Object
		err := chaosRetry(o.ctx, time.Until(deadline), func(ctx context.Context) error {
			var err error
			cur, err = o.cl.Get(ctx, "Deployment", "default", o.name, client.ReadOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: read the Deployment: %w", desc, err)
		}
		d := gproto.Clone(cur).(*pb.Object)
		set(d.GetDeployment())
		o.mu.Lock()
		o.writes++
		o.mu.Unlock()
		ctx, cancel := context.WithTimeout(o.ctx, 15*time.Second)
		resp, err := o.cl.Update(ctx, d)
		cancel()
		out, notApplied, unexpected := outcome(opUpdate, err)
		o.mu.Lock()
		switch {
		case err == nil:
			o.acked++
			a := chaosAck{RV: resp.GetObject().Meta().GetResourceVersion(), Field: field, Desc: desc, Has: has}
			o.acks = append(o.acks, a)
			o.last[field] = a
			o.mu.Unlock()
			return nil
		case unexpected:
			o.mu.Unlock()
			return fmt.Errorf("%s: %w", desc, err)
		case out.Code == codes.Aborted:
			o.conflict++
		case notApplied:
			o.notApplied++
		case out.Unknown:
			o.unknown++
		default:
			o.mu.Unlock()
			return fmt.Errorf("%s: %w", desc, err)
		}
		o.mu.Unlock()
		if time.Now().After(deadline) || o.ctx.Err() != nil {
			return fmt.Errorf("%s: not acknowledged within %s: %w", desc, within, err)
		}
		// Conflict or unknown: read again; if the change is there (an
		// unknown outcome that was applied), it is done.
		var now *pb.Object
		if chaosRetry(o.ctx, time.Until(deadline), func(ctx context.Context) error {
			var err error
			now, err = o.cl.Get(ctx, "Deployment", "default", o.name, client.ReadOptions{})
			return err
		}) == nil && has(now.GetDeployment()) && !has(cur.GetDeployment()) {
			o.mu.Lock()
			if out.Unknown {
				o.unknownApplied++
			}
			o.last[field] = chaosAck{RV: now.Meta().GetResourceVersion(), Field: field, Desc: desc + " (outcome was unknown; read back)", Has: has}
			o.mu.Unlock()
			return nil
		}
	}
}

// lost checks that every acknowledged write is in the Deployment's watch
// history at the index it was acknowledged with, and that the final spec
// holds the last acknowledged value of each field.
func (o *chaosOps) lost(history []chaosObjEvent, final *pb.Deployment) (lost int, problems []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	byRV := map[uint64]*pb.Deployment{}
	relisted := false
	for _, ev := range history {
		if d := ev.Obj.GetDeployment(); d != nil && d.GetMetadata().GetName() == o.name && !ev.Relist {
			byRV[ev.RV] = d
		}
		relisted = relisted || ev.Relist
	}
	for _, a := range o.acks {
		d, ok := byRV[a.RV]
		switch {
		case !ok && relisted:
			// The watch skipped this part of the history: the final state
			// decides for the last write of each field.
		case !ok:
			lost++
			problems = append(problems, fmt.Sprintf("acknowledged write %q at index %d is not in the watch history", a.Desc, a.RV))
		case !a.Has(d):
			lost++
			problems = append(problems, fmt.Sprintf("acknowledged write %q: the object at index %d does not hold it", a.Desc, a.RV))
		}
	}
	for field, a := range o.last {
		if !a.Has(final) {
			lost++
			problems = append(problems, fmt.Sprintf("the final Deployment lacks the last acknowledged %s change %q", field, a.Desc))
		}
	}
	return lost, problems
}

func (o *chaosOps) counts() (writes, acked, unknown, conflict, notApplied int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.writes, o.acked, o.unknown, o.conflict, o.notApplied
}

// rolledOut reports whether the Deployment's status says the rollout of
// its current spec is complete.
func chaosRolledOut(d *pb.Deployment) error {
	r, _, _ := chaosFenceposts(d)
	st := d.GetStatus()
	if st.GetObservedGeneration() < d.GetMetadata().GetGeneration() {
		return fmt.Errorf("observedGeneration %d < generation %d", st.GetObservedGeneration(), d.GetMetadata().GetGeneration())
	}
	if st.GetReplicas() != r || st.GetUpdatedReplicas() != r || st.GetAvailableReplicas() != r || st.GetReadyReplicas() != r {
		return fmt.Errorf("want %d replicas, status has %d (updated %d, ready %d, available %d)",
			r, st.GetReplicas(), st.GetUpdatedReplicas(), st.GetReadyReplicas(), st.GetAvailableReplicas())
	}
	return nil
}

// waitRolledOut polls until the Deployment's rollout is complete.
func (o *chaosOps) waitRolledOut(within time.Duration) error {
	return poll(within, func() error {
		if o.ctx.Err() != nil {
			return nil // the test is over
		}
		ctx, cancel := context.WithTimeout(o.ctx, 3*time.Second)
		defer cancel()
		obj, err := o.cl.Get(ctx, "Deployment", "default", o.name, client.ReadOptions{})
		if err != nil {
			return err
		}
		return chaosRolledOut(obj.GetDeployment())
	})
}

// --- end-state checks ---

// chaosWorld is one consistent read of what the checks look at.
type chaosWorld struct {
	deploys map[string]*pb.Deployment // by uid
	rss     map[string]*pb.ReplicaSet // by uid
	pods    []*pb.Pod
	nodes   map[string]*pb.Node // by name
}

func chaosRead(cl *client.Client) (chaosWorld, error) {
	w := chaosWorld{deploys: map[string]*pb.Deployment{}, rss: map[string]*pb.ReplicaSet{}, nodes: map[string]*pb.Node{}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, kind := range []string{"Node", "Deployment", "ReplicaSet", "Pod"} {
		ns := "default"
		if kind == "Node" {
			ns = "" // not namespaced
		}
		items, _, err := cl.List(ctx, kind, client.ListOptions{Namespace: ns})
		if err != nil {
			return w, fmt.Errorf("list %s: %w", kind, err)
		}
		for _, it := range items {
			switch kind {
			case "Node":
				w.nodes[it.Meta().GetName()] = it.GetNode()
			case "Deployment":
				w.deploys[it.Meta().GetUid()] = it.GetDeployment()
			case "ReplicaSet":
				w.rss[it.Meta().GetUid()] = it.GetReplicaSet()
			case "Pod":
				w.pods = append(w.pods, it.GetPod())
			}
		}
	}
	sort.Slice(w.pods, func(i, j int) bool { return w.pods[i].GetMetadata().GetName() < w.pods[j].GetMetadata().GetName() })
	return w, nil
}

func chaosControllerRef(m *pb.ObjectMeta) *pb.OwnerReference {
	for _, r := range m.GetOwnerReferences() {
		if r.GetController() {
			return r
		}
	}
	return nil
}

// integrity lists what is wrong regardless of timing: pods without a live
// owning ReplicaSet, ReplicaSets without a live owning Deployment, pods
// bound to nodes that do not exist.
func (w chaosWorld) integrity() []string {
	var out []string
	for _, rs := range w.rss {
		ref := chaosControllerRef(rs.GetMetadata())
		if ref == nil || ref.GetKind() != "Deployment" || w.deploys[ref.GetUid()] == nil {
			out = append(out, fmt.Sprintf("ReplicaSet %s has no live owning Deployment (%v)", rs.GetMetadata().GetName(), ref))
		}
	}
	for _, p := range w.pods {
		m := p.GetMetadata()
		ref := chaosControllerRef(m)
		if ref == nil || ref.GetKind() != "ReplicaSet" || w.rss[ref.GetUid()] == nil {
			out = append(out, fmt.Sprintf("pod %s has no live owning ReplicaSet (%v)", m.GetName(), ref))
		}
		if n := p.GetSpec().GetNodeName(); n != "" && w.nodes[n] == nil {
			out = append(out, fmt.Sprintf("pod %s is bound to node %s, which does not exist", m.GetName(), n))
		}
	}
	return out
}

// podsOf returns the pods of the Deployment named dep (by label).
func (w chaosWorld) podsOf(dep string) []*pb.Pod {
	var out []*pb.Pod
	for _, p := range w.pods {
		if p.GetMetadata().GetLabels()["app"] == dep {
			out = append(out, p)
		}
	}
	return out
}

func (w chaosWorld) deployment(name string) *pb.Deployment {
	for _, d := range w.deploys {
		if d.GetMetadata().GetName() == name {
			return d
		}
	}
	return nil
}

// exact reports why the Deployment is not exactly converged: replicas pods,
// all ready, none terminating, all of the current template.
func (w chaosWorld) exact(dep string) error {
	d := w.deployment(dep)
	if d == nil {
		return fmt.Errorf("deployment %s is gone", dep)
	}
	if err := chaosRolledOut(d); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	r, _, _ := chaosFenceposts(d)
	want := d.GetSpec().GetTemplate().GetSpec().GetContainers()[0]
	pods := w.podsOf(dep)
	var bad []string
	for _, p := range pods {
		c := p.GetSpec().GetContainers()[0]
		switch {
		case p.GetMetadata().GetDeletionTimestamp() != nil:
			bad = append(bad, p.GetMetadata().GetName()+" terminating")
		case !chaosReady(p):
			bad = append(bad, p.GetMetadata().GetName()+" not ready")
		case c.GetImage() != want.GetImage() || !gproto.Equal(&pb.Container{Env: c.GetEnv()}, &pb.Container{Env: want.GetEnv()}):
			bad = append(bad, p.GetMetadata().GetName()+" of an old template")
		}
	}
	if len(pods) != int(r) || len(bad) > 0 {
		return fmt.Errorf("%d pods, want exactly %d ready pods of the newest template; %s", len(pods), r, strings.Join(bad, ", "))
	}
	return nil
}

// chaosContainers checks a real worker's containers against the pods bound
// to its node: every pod that is not terminating has exactly one running
// container per container of its spec, and no container or sandbox
// belongs to a pod that is not bound there.
func chaosContainers(rt *wrt.Runtime, node string, w chaosWorld) (running int, err error) {
	bound := map[string]*pb.Pod{}
	for _, p := range w.pods {
		if p.GetSpec().GetNodeName() == node {
			bound[p.GetMetadata().GetUid()] = p
		}
	}
	cs, err := rt.List()
	if err != nil {
		return 0, err
	}
	perPod := map[string]int{}
	var problems []string
	for _, c := range cs {
		if _, ok := bound[c.PodUID]; !ok {
			problems = append(problems, fmt.Sprintf("container %s (%s) of pod uid %s, which is not bound to %s", c.ID, c.State, c.PodUID, node))
			continue
		}
		if c.State == wrt.StateRunning {
			perPod[c.PodUID]++
			running++
		}
	}
	for uid, p := range bound {
		if p.GetMetadata().GetDeletionTimestamp() != nil {
			continue
		}
		if want := len(p.GetSpec().GetContainers()); perPod[uid] != want {
			problems = append(problems, fmt.Sprintf("pod %s has %d running containers, want %d", p.GetMetadata().GetName(), perPod[uid], want))
		}
	}
	sbs, err := rt.ListSandboxes()
	if err != nil {
		return running, err
	}
	for _, sb := range sbs {
		if _, ok := bound[sb.PodUID]; !ok {
			problems = append(problems, fmt.Sprintf("sandbox of pod uid %s, which is not bound to %s", sb.PodUID, node))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return running, errors.New(strings.Join(problems, "; "))
	}
	return running, nil
}

// chaosProbe writes one ConfigMap over and over through every master and
// records when each write was acknowledged: the gaps are the API's
// unavailability.
type chaosProbe struct {
	mu     sync.Mutex
	acks   []time.Duration
	writes int
	stop   chan struct{}
	done   chan struct{}
}

func startChaosProbe(cc *chaosCluster) *chaosProbe {
	cl := cc.newClient(cc.apiAddrs())
	pr := &chaosProbe{stop: make(chan struct{}), done: make(chan struct{})}
	cc.t.Cleanup(pr.halt)
	go func() {
		defer close(pr.done)
		for i := 0; ; i++ {
			select {
			case <-pr.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			// No resourceVersion: an unconditional write, so a retried
			// unknown outcome never conflicts.
			_, err := cl.Update(ctx, configMap("chaos-probe", map[string]string{"i": strconv.Itoa(i)}))
			if err == nil {
				pr.mu.Lock()
				pr.acks = append(pr.acks, cc.now())
				pr.mu.Unlock()
			} else if chaosNotFound(err) {
				ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
				_, _ = cl.Create(ctx2, configMap("chaos-probe", map[string]string{"i": strconv.Itoa(i)}))
				cancel2()
			}
			cancel()
			pr.mu.Lock()
			pr.writes++
			pr.mu.Unlock()
			select {
			case <-pr.stop:
				return
			case <-time.After(50 * time.Millisecond): // pacing, not synchronisation
			}
		}
	}()
	return pr
}

func chaosNotFound(err error) bool { return status.Code(err) == codes.NotFound }

func (pr *chaosProbe) halt() {
	select {
	case <-pr.stop:
	default:
		close(pr.stop)
	}
	<-pr.done
}

func (pr *chaosProbe) result() (acks []time.Duration, writes int) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return append([]time.Duration(nil), pr.acks...), pr.writes
}

// chaosWaitNodes polls until the named nodes are Ready.
func chaosWaitNodes(cl *client.Client, within time.Duration, names ...string) error {
	return poll(within, func() error {
		ready, err := chaosNodeReady(cl)
		if err != nil {
			return err
		}
		for _, n := range names {
			if ready[n] != "True" {
				return fmt.Errorf("node %s is %q, not Ready", n, ready[n])
			}
		}
		return nil
	})
}

// chaosNodeReady returns every node's Ready condition status.
func chaosNodeReady(cl *client.Client) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	items, _, err := cl.List(ctx, "Node", client.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, it := range items {
		out[it.Meta().GetName()] = ""
		for _, c := range it.GetNode().GetStatus().GetConditions() {
			if c.GetType() == "Ready" {
				out[it.Meta().GetName()] = c.GetStatus()
			}
		}
	}
	return out, nil
}

// chaosKillLeader SIGKILLs the leader, restarts it a moment later and
// waits for the cluster to be whole again (TestChaosLeaderKill's fault).
func chaosKillLeader(sc *scenario) {
	cc, t := sc.cc, sc.t
	restartAfter := min(time.Second, sc.p.interval/4)
	lv := sc.leader(cc.live())
	f := sc.inject("kill", lv.m.name)
	cc.crash(lv.m)
	err := poll(30*time.Second, func() error {
		if f.NewLeader == "" {
			if l := sc.newLeaderSeen(lv.term, cc.live()); l != nil {
				f.elected(l, cc.now())
			}
		}
		if f.lifted == 0 && cc.now()-f.at >= restartAfter {
			cc.restart(lv.m)
			f.lift(cc.now())
		}
		if f.NewLeader == "" || f.lifted == 0 {
			return fmt.Errorf("no new leader yet")
		}
		return nil
	})
	if f.lifted == 0 {
		cc.restart(lv.m)
		f.lift(cc.now())
	}
	if err != nil {
		t.Errorf("after killing %s: %v", lv.m.name, err)
	}
	sc.healthy()
}

// chaosNewScenario is a scenario record for a cluster started by the
// caller (the workload scenarios need workers and master flags of their
// own, and no ConfigMap workload).
func chaosNewScenario(t *testing.T, p chaosParams, cc *chaosCluster, name string) *scenario {
	sc := &scenario{t: t, p: p, cc: cc, rep: scenarioReport{
		Scenario: name, Started: time.Now(), Linearizable: "-", Extra: map[string]any{},
		Params: map[string]string{"full": fmt.Sprint(p.full), "duration": p.duration.String(), "interval": p.interval.String(),
			"seed": fmt.Sprint(p.seed), "masters": "3"},
	}}
	t.Cleanup(func() {
		if !sc.saved {
			sc.rep.Problems = append(sc.rep.Problems, "the scenario stopped before its checks (see the test log)")
			sc.rep.Seconds = time.Since(sc.rep.Started).Seconds()
			saveReport(t, sc.rep)
		}
	})
	return sc
}

// chaosFigures renders scenario-specific figures as a two-column table.
func chaosFigures(rows [][2]string) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	tw.Flush()
	return b.String()
}

// TestChaosWorkloads: a Deployment on three hollow workers and one real
// worker keeps converging while the leader is SIGKILLed every interval
// (at least 5 times, 10 with -chaos.full) and restarted, and while it is
// scaled up and down and rolled (new env, new image) through the client.
func TestChaosWorkloads(t *testing.T) {
	chaosNeedRoot(t)
	p := chaosConfig(t)
	minKills := 5
	if p.full {
		minKills = 10
	}
	imageV1 := demoImage(t)
	imageV2 := chaosRetag(t, imageV1, "v2")
	cc := startChaosClusterArgs(t)
	sc := chaosNewScenario(t, p, cc, "workloads")
	rep := &sc.rep
	rep.Params["min_kills"] = fmt.Sprint(minKills)

	w1 := startWorker(t, cc.cluster, imageV1)
	workers := map[string]*workerProc{"w1": w1}
	for i := 1; i <= 3; i++ {
		n := fmt.Sprintf("h%d", i)
		workers[n] = hollowWorker(t, cc.cluster, n)
	}
	chaosKeepWorkerLogs(t, workers)
	cl := cc.newClient(cc.apiAddrs())
	if err := chaosWaitNodes(cl, 60*time.Second, "w1", "h1", "h2", "h3"); err != nil {
		t.Fatalf("workers: %v", err)
	}
	const dep = "chaos-web"
	depWatch := startChaosWatch(cc, "Deployment", "default", "")
	podWatch := startChaosWatch(cc, "Pod", "default", "app="+dep)
	ops := newChaosOps(t, cc.newClient(cc.apiAddrs()), dep)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	_, err := cl.Create(ctx, chaosDeployment(dep, imageV1, 4, "1", "1"))
	cancel()
	if err != nil {
		t.Fatalf("create the Deployment: %v", err)
	}
	if err := ops.waitRolledOut(90 * time.Second); err != nil {
		t.Fatalf("the Deployment does not roll out before any fault: %v", err)
	}
	probe := startChaosProbe(cc)

	// The user's side: one change after the other, each followed by
	// waiting for its rollout, until the faults are over.
	stopOps := make(chan struct{})
	opsDone := make(chan struct{})
	var opsMu sync.Mutex
	var opsProblems, opLog []string
	go func() {
		defer close(opsDone)
		// Alternately a scale and a template change (env, env, image...).
		replicas := []int32{6, 3, 5, 2, 7, 4}
		images := []string{imageV2, imageV1}
		for i := 0; ; i++ {
			select {
			case <-stopOps:
				return
			case <-ops.ctx.Done():
				return
			default:
			}
			var field, desc string
			var set func(*pb.Deployment)
			var has func(*pb.Deployment) bool
			switch {
			case i%2 == 0:
				r := replicas[(i/2)%len(replicas)]
				field, desc = "replicas", fmt.Sprintf("scale to %d", r)
				set = func(d *pb.Deployment) { d.Spec.Replicas = gproto.Int32(r) }
				has = func(d *pb.Deployment) bool { return d.GetSpec().GetReplicas() == r }
			case i%6 == 5:
				img := images[(i/6)%2]
				field, desc = "template", "set image "+img[strings.LastIndex(img, "/")+1:]
				set = func(d *pb.Deployment) { d.GetSpec().GetTemplate().GetSpec().GetContainers()[0].Image = img }
				has = func(d *pb.Deployment) bool {
					return d.GetSpec().GetTemplate().GetSpec().GetContainers()[0].GetImage() == img
				}
			default:
				v := fmt.Sprintf("v%d", i)
				field, desc = "template", "set env GREETING="+v
				set = func(d *pb.Deployment) { chaosSetEnv(d, "GREETING", v) }
				has = func(d *pb.Deployment) bool { return chaosEnv(d, "GREETING") == v }
			}
			began := cc.now()
			err := ops.change(field, desc, set, has, 60*time.Second)
			if err == nil {
				err = ops.waitRolledOut(90 * time.Second)
			}
			opsMu.Lock()
			opLog = append(opLog, fmt.Sprintf("t=%6.2fs %s: rolled out in %.1fs", began.Seconds(), desc, (cc.now()-began).Seconds()))
			if err != nil {
				opsProblems = append(opsProblems, fmt.Sprintf("%s (t=%.1fs): %v", desc, began.Seconds(), err))
				opLog[len(opLog)-1] = fmt.Sprintf("t=%6.2fs %s: %v", began.Seconds(), desc, err)
			}
			opsMu.Unlock()
			if field == "replicas" {
				// Let the new replicas settle before the rolling update, so
				// that the availability check (which holds only while the
				// replicas stay the same) covers it. Pacing, not
				// synchronisation.
				select {
				case <-stopOps:
				case <-ops.ctx.Done():
				case <-time.After(chaosBoundLag + 500*time.Millisecond):
				}
			}
		}
	}()

	sc.loop(minKills, func(int) { chaosKillLeader(sc) })
	lastFault := sc.rep.Faults[len(sc.rep.Faults)-1].at
	close(stopOps)
	<-opsDone
	probe.halt()

	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	// Converged: exactly the desired pods, and on the real worker exactly
	// their containers.
	rt := chaosRuntime(t, w1)
	var world chaosWorld
	var running int
	var convergeAfter time.Duration
	err = poll(120*time.Second, func() error {
		var err error
		if world, err = chaosRead(cl); err != nil {
			return err
		}
		if err := world.exact(dep); err != nil {
			return err
		}
		if running, err = chaosContainers(rt, "w1", world); err != nil {
			return fmt.Errorf("real worker w1: %w", err)
		}
		return nil
	})
	if err != nil {
		fail("did not converge after the last fault: %v", err)
		if world, err = chaosRead(cl); err != nil {
			t.Fatalf("read the cluster: %v", err)
		}
	} else {
		rep.Converged = true
		convergeAfter = cc.now() - lastFault
	}
	for _, p := range world.integrity() {
		fail("%s", p)
	}
	end := cc.now()
	if _, err := cc.waitConverged(60 * time.Second); err != nil {
		fail("the masters did not converge: %v", err)
	}

	// The watch histories, complete up to what the final read saw.
	var lastPodRV, lastDepRV uint64
	for _, p := range world.pods {
		lastPodRV = max(lastPodRV, p.GetMetadata().GetResourceVersion())
	}
	final := world.deployment(dep)
	lastDepRV = final.GetMetadata().GetResourceVersion()
	if err := podWatch.waitFor(lastPodRV, 30*time.Second); err != nil {
		fail("%v", err)
	}
	if err := depWatch.waitFor(lastDepRV, 30*time.Second); err != nil {
		fail("%v", err)
	}
	depEvents, podEvents := depWatch.history(), podWatch.history()
	bounds := chaosCheckBounds(podEvents, chaosSpecVersions(depEvents, dep), chaosBoundLag)
	for _, v := range bounds.Violations {
		fail("%s", v)
	}
	if bounds.Creations == 0 {
		fail("the surge check saw no pod creation: it tested nothing")
	}
	var lostProblems []string
	rep.Lost, lostProblems = ops.lost(depEvents, final)
	for _, p := range lostProblems {
		fail("lost: %s", p)
	}
	opsMu.Lock()
	problems = append(problems, opsProblems...)
	opsLog := append([]string(nil), opLog...)
	opsMu.Unlock()

	writes, acked, unknown, conflicts, notApplied := ops.counts()
	rep.Ops, rep.Writes, rep.Acked, rep.Unknown, rep.Rejected, rep.NotApplied = writes, writes, acked, unknown, conflicts, notApplied
	rep.UnknownApplied = ops.unknownApplied
	acks, probeWrites := probe.result()
	unavailability(acks, rep.Faults, end)
	rep.UnavailMedian, rep.UnavailMax = medianMax(rep.Faults)
	pe, preopen, prelist := podWatch.stats()
	de, dreopen, drelist := depWatch.stats()
	rep.WatchEvents = pe + de
	rep.Extra["converge_after_last_fault_seconds"] = convergeAfter.Seconds()
	rep.Extra["bounds"] = bounds
	rep.Extra["probe_writes"] = probeWrites
	rep.Extra["probe_acknowledged"] = len(acks)
	rep.Extra["pod_watch"] = map[string]int{"events": pe, "reopens": preopen, "relists": prelist}
	rep.Extra["deployment_watch"] = map[string]int{"events": de, "reopens": dreopen, "relists": drelist}
	rep.Extra["real_worker_running_containers"] = running
	rep.Extra["operations"] = opsLog
	if len(opsLog) < 3 {
		fail("only %d changes to the Deployment were made during the faults, want at least 3", len(opsLog))
	}
	if len(rep.Faults) < minKills {
		fail("%d leader kills, want at least %d", len(rep.Faults), minKills)
	}
	rep.Seconds = time.Since(rep.Started).Seconds()
	rep.Problems = problems
	rep.Passed = len(problems) == 0
	t.Logf("changes issued during the faults:\n%s", strings.Join(opsLog, "\n"))
	t.Logf("%s\n%s\n%s", table([]scenarioReport{*rep}), faultTable(rep.Faults), chaosFigures([][2]string{
		{"deployment writes (acked/unknown/conflicts/not applied)", fmt.Sprintf("%d (%d/%d/%d/%d)", writes, acked, unknown, conflicts, notApplied)},
		{"lost acknowledged changes", fmt.Sprint(rep.Lost)},
		{"converged after the last fault", fmt.Sprintf("%v in %.2fs", rep.Converged, convergeAfter.Seconds())},
		{"pod creations checked (surge)", fmt.Sprintf("%d, max active %d, max over bound %d", bounds.Creations, bounds.MaxActive, bounds.MaxOverBound)},
		{"ready-pod deletions checked (availability)", fmt.Sprintf("%d, fewest ready after one %d", bounds.Deletions, bounds.MinAvailable)},
		{"events unchecked (relists)", fmt.Sprint(bounds.Unchecked)},
		{"pod watch events/reopens/relists", fmt.Sprintf("%d/%d/%d", pe, preopen, prelist)},
		{"probe writes (acked)", fmt.Sprintf("%d (%d)", probeWrites, len(acks))},
		{"running containers on w1", fmt.Sprint(running)},
	}))
	sc.saved = true
	saveReport(t, *rep)
	for _, p := range problems {
		t.Error(p)
	}
}

// TestChaosBoundsReplay checks the replay that the workload scenarios rely
// on, on made-up histories: it must flag a creation beyond the surge bound
// and a deletion below the availability floor, and allow a controller that
// acts on a spec replaced a moment before.
func TestChaosBoundsReplay(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	pod := func(name string, created float64, ready, terminating bool) *pb.Object {
		p := &pb.Pod{Metadata: &pb.ObjectMeta{Name: name, Uid: name, CreationTimestamp: timestamppb.New(at(created))},
			Status: &pb.PodStatus{Phase: "Running"}}
		if ready {
			p.Status.Conditions = []*pb.PodCondition{{Type: "Ready", Status: "True"}}
		}
		if terminating {
			p.Metadata.DeletionTimestamp = timestamppb.New(at(created))
		}
		return pb.Wrap(p)
	}
	ev := func(typ string, rv uint64, seen float64, o *pb.Object) chaosObjEvent {
		return chaosObjEvent{Type: typ, RV: rv, At: at(seen), Obj: o}
	}
	// replicas 2, maxSurge 1, maxUnavailable 1 from index 10; replicas 1
	// from index 30, seen at t=30.
	vs := []chaosSpecVersion{{RV: 10, Seen: at(10), Replicas: 2, Surge: 1, Unavail: 1}, {RV: 30, Seen: at(30), Replicas: 1, Surge: 1, Unavail: 0}}
	base := []chaosObjEvent{
		ev("ADDED", 11, 11, pod("a", 11, false, false)),
		ev("MODIFIED", 12, 12, pod("a", 11, true, false)),
		ev("ADDED", 13, 13, pod("b", 13, false, false)),
		ev("MODIFIED", 14, 14, pod("b", 13, true, false)),
		ev("ADDED", 15, 15, pod("c", 15, false, false)), // surge: 3 <= 2+1
	}
	cases := []struct {
		name       string
		events     []chaosObjEvent
		violations int
	}{
		{"within bounds", base, 0},
		{"beyond surge", append(base[:5:5], ev("ADDED", 16, 16, pod("d", 16, false, false))), 1},
		{"old spec a moment after a scale-down", append(base[:5:5],
			ev("MODIFIED", 31, 31, pod("c", 15, false, true)),
			ev("ADDED", 32, 32, pod("d", 30.5, false, false))), 0},
		{"old spec long after a scale-down", append(base[:5:5],
			ev("MODIFIED", 31, 31, pod("c", 15, false, true)),
			ev("ADDED", 32, 40, pod("d", 39, false, false))), 1},
		{"ready pod deleted below the floor", append(base[:4:4],
			ev("MODIFIED", 20, 20, pod("a", 11, true, true)),
			ev("MODIFIED", 21, 21, pod("b", 13, true, true))), 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := chaosCheckBounds(tc.events, vs, chaosBoundLag)
			if len(res.Violations) != tc.violations {
				t.Errorf("got %d violations, want %d: %v (%+v)", len(res.Violations), tc.violations, res.Violations, res)
			}
		})
	}
}
