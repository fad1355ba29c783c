package nodeipam

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func node(name, cidr string) *pb.Object {
	n := &pb.Node{Metadata: &pb.ObjectMeta{Name: name}, Spec: &pb.NodeSpec{}, Status: &pb.NodeStatus{}}
	if cidr != "" {
		n.Spec.PodCidr = cidr
		n.Spec.PodCidrs = []string{cidr}
	}
	return pb.Wrap(n)
}

func start(t *testing.T, cfg Config, objs ...*pb.Object) (*controllertest.Harness, *Controller) {
	t.Helper()
	h := controllertest.NewHarness(t, objs...)
	validateWrites(t, h.Fake)
	c, err := New(h.Env(Name), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	return h, c
}

// podCIDRs returns "name=podCIDR" for every node in the store, checking
// that podCIDRs agrees with podCIDR.
func podCIDRs(t *testing.T, f *controllertest.Fake) []string {
	t.Helper()
	var out []string
	for _, o := range f.Objects("Node") {
		s := o.GetNode().GetSpec()
		if s.GetPodCidr() != "" && !slices.Equal(s.GetPodCidrs(), []string{s.GetPodCidr()}) {
			t.Errorf("node %s: podCIDRs %q does not match podCIDR %q", o.Meta().GetName(), s.GetPodCidrs(), s.GetPodCidr())
		}
		out = append(out, o.Meta().GetName()+"="+s.GetPodCidr())
	}
	sort.Strings(out)
	return out
}

func expectCIDRs(t *testing.T, f *controllertest.Fake, want ...string) {
	t.Helper()
	if got := podCIDRs(t, f); !slices.Equal(got, want) {
		t.Fatalf("pod CIDRs:\n got %q\nwant %q", got, want)
	}
}

func expectActions(t *testing.T, h *controllertest.Harness, want ...string) {
	t.Helper()
	if got := h.Fake.ActionStrings("Event"); !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	h.Fake.ClearActions()
}

// noDuplicates fails the test if the store is ever in a state where two
// nodes record the same pod CIDR.
func noDuplicates(t *testing.T, f *controllertest.Fake) {
	f.Observe(func(_ *pb.WatchEvent, objects func(string) []*pb.Object) {
		seen := map[string]string{}
		for _, o := range objects("Node") {
			c := o.GetNode().GetSpec().GetPodCidr()
			if c == "" {
				continue
			}
			if other, dup := seen[c]; dup {
				t.Errorf("nodes %s and %s both hold %s", other, o.Meta().GetName(), c)
			}
			seen[c] = o.Meta().GetName()
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"default", DefaultConfig(), ""},
		{"small cluster", Config{ClusterCIDR: "10.0.0.0/28", NodeCIDRMaskSize: 30}, ""},
		{"not a CIDR", Config{ClusterCIDR: "10.244.0.0", NodeCIDRMaskSize: 24}, "ClusterCIDR"},
		{"IPv6", Config{ClusterCIDR: "fd00::/48", NodeCIDRMaskSize: 64}, "ClusterCIDR"},
		{"host bits", Config{ClusterCIDR: "10.244.1.0/16", NodeCIDRMaskSize: 24}, "did you mean 10.244.0.0/16"},
		{"mask not larger", Config{ClusterCIDR: "10.244.0.0/16", NodeCIDRMaskSize: 16}, "NodeCIDRMaskSize 16 must be larger"},
		{"mask too long", Config{ClusterCIDR: "10.244.0.0/16", NodeCIDRMaskSize: 31}, "NodeCIDRMaskSize 31 must be at most 30"},
		{"too many subnets", Config{ClusterCIDR: "10.0.0.0/8", NodeCIDRMaskSize: 25}, "NodeCIDRMaskSize 25 splits"},
		{"zero", Config{}, "ClusterCIDR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestSubnetArithmetic(t *testing.T) {
	set, err := newCIDRSet(Config{ClusterCIDR: "10.244.0.0/16", NodeCIDRMaskSize: 24})
	if err != nil {
		t.Fatal(err)
	}
	if set.count != 256 || set.subnet(0).String() != "10.244.0.0/24" || set.subnet(255).String() != "10.244.255.0/24" {
		t.Fatalf("count %d, first %s, last %s", set.count, set.subnet(0), set.subnet(255))
	}
	set26, _ := newCIDRSet(Config{ClusterCIDR: "10.244.0.0/16", NodeCIDRMaskSize: 26})
	if got := set26.subnet(5).String(); got != "10.244.1.64/26" {
		t.Fatalf("subnet 5 of /26s = %s", got)
	}
}

func TestSequentialAssignment(t *testing.T) {
	tests := []struct {
		name     string
		existing []*pb.Object
		want     []string // podCIDRs n1, n2, n3 get, in that order
	}{
		{"empty cluster", nil, []string{"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"}},
		{"gaps are filled lowest first", []*pb.Object{node("m1", "10.244.1.0/24"), node("m3", "10.244.3.0/24")},
			[]string{"10.244.0.0/24", "10.244.2.0/24", "10.244.4.0/24"}},
		{"outside the cluster CIDR is not ours", []*pb.Object{node("ext", "10.245.0.0/24"), node("ext2", "192.168.0.0/24")},
			[]string{"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"}},
		{"a wider podCIDR occupies every subnet it covers", []*pb.Object{node("wide", "10.244.0.0/23")},
			[]string{"10.244.2.0/24", "10.244.3.0/24", "10.244.4.0/24"}},
		{"a narrower podCIDR occupies its subnet", []*pb.Object{node("narrow", "10.244.1.128/25")},
			[]string{"10.244.0.0/24", "10.244.2.0/24", "10.244.3.0/24"}},
		{"podCIDRs without podCIDR counts", []*pb.Object{pb.Wrap(&pb.Node{Metadata: &pb.ObjectMeta{Name: "m0"}, Spec: &pb.NodeSpec{PodCidrs: []string{"10.244.0.0/24"}}})},
			[]string{"10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := append(slices.Clone(tc.existing), node("n1", ""), node("n2", ""), node("n3", ""))
			h, c := start(t, DefaultConfig(), objs...)
			noDuplicates(t, h.Fake)
			for i, name := range []string{"n1", "n2", "n3"} {
				h.Reconcile(c, name)
				if got := h.Fake.Get("Node", "", name).GetNode().GetSpec().GetPodCidr(); got != tc.want[i] {
					t.Fatalf("%s got %q, want %q", name, got, tc.want[i])
				}
			}
			expectActions(t, h, "update Node n1", "update Node n2", "update Node n3")
			// Assigned nodes and foreign ones are left alone.
			for _, o := range objs {
				h.Reconcile(c, o.Meta().GetName())
			}
			expectActions(t, h)
			if ev := h.Recorder.Events(); len(ev) != 0 {
				t.Fatalf("events: %q", ev)
			}
		})
	}
}

// TestFailoverRebuildsFromCache runs one controller (a leader) until it
// has assigned subnets, stops it, adds nodes, and runs a fresh controller
// with fresh informers over the same store (the next leader): it must
// continue above what the first one handed out.
func TestFailoverRebuildsFromCache(t *testing.T) {
	h := controllertest.NewHarness(t, node("n1", ""), node("n2", ""), node("n3", ""))
	noDuplicates(t, h.Fake)

	runLeader := func(nodes ...string) {
		t.Helper()
		env := h.Env(Name)
		env.Informers = controllers.NewInformerFactory(h.Fake, h.Logger, 0)
		c, err := New(env, DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(h.Context())
		env.Informers.Start(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
			env.Informers.Wait()
		}()
		h.Eventually(func() bool {
			for _, n := range nodes {
				if h.Fake.Get("Node", "", n).GetNode().GetSpec().GetPodCidr() == "" {
					return false
				}
			}
			return true
		}, fmt.Sprintf("pod CIDRs for %v", nodes))
	}

	cidrOf := func(name string) string { return h.Fake.Get("Node", "", name).GetNode().GetSpec().GetPodCidr() }
	runLeader("n1", "n2", "n3")
	// Two workers reconcile at once: which node gets which is not fixed,
	// but the three lowest subnets are used.
	first := []string{cidrOf("n1"), cidrOf("n2"), cidrOf("n3")}
	if got := slices.Sorted(slices.Values(first)); !slices.Equal(got, []string{"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"}) {
		t.Fatalf("first leader assigned %q", first)
	}

	// Between leaders: a node leaves (its subnet is free again), two join.
	freed := cidrOf("n2")
	h.Fake.Remove("Node", "", "n2")
	h.Fake.Add(node("n4", ""))
	h.Fake.Add(node("n5", ""))
	runLeader("n4", "n5")
	if cidrOf("n1") != first[0] || cidrOf("n3") != first[2] {
		t.Fatalf("existing assignments changed: %q", podCIDRs(t, h.Fake))
	}
	got := slices.Sorted(slices.Values([]string{cidrOf("n4"), cidrOf("n5")}))
	if want := slices.Sorted(slices.Values([]string{freed, "10.244.3.0/24"})); !slices.Equal(got, want) {
		t.Fatalf("new nodes got %q, want %q (the freed subnet and the next one)", got, want)
	}
}

// TestExhaustion fills a two-subnet cluster CIDR: the third node gets a
// Warning event and no subnet until a node is deleted, then the freed one.
func TestExhaustion(t *testing.T) {
	cfg := Config{ClusterCIDR: "10.244.0.0/23", NodeCIDRMaskSize: 24}
	h, c := start(t, cfg, node("n1", ""), node("n2", ""), node("n3", ""))
	noDuplicates(t, h.Fake)
	h.Reconcile(c, "n1")
	h.Reconcile(c, "n2")
	res := h.Reconcile(c, "n3")
	if res.RequeueAfter <= 0 {
		t.Errorf("an exhausted node should be looked at again later, got %+v", res)
	}
	expectActions(t, h, "update Node n1", "update Node n2")
	wantEvent := "Warning Node n3 CIDRNotAvailable: no free /24 left in cluster CIDR 10.244.0.0/23: remove nodes or widen --cluster-cidr"
	if ev := h.Recorder.Events(); !slices.Equal(ev, []string{wantEvent}) {
		t.Fatalf("events:\n got %q\nwant %q", ev, []string{wantEvent})
	}

	// n1 is going away but not yet gone: its subnet is still in use.
	if err := h.Fake.Mutate("Node", "", "n1", func(o *pb.Object) { o.Meta().Labels = map[string]string{"leaving": "yes"} }); err != nil {
		t.Fatal(err)
	}
	h.Reconcile(c, "n3")
	expectActions(t, h)
	expectCIDRs(t, h.Fake, "n1=10.244.0.0/24", "n2=10.244.1.0/24", "n3=")
	// n3 keeps waiting (its heartbeats bring it back): it was told once.
	for range 5 {
		h.Reconcile(c, "n3")
	}
	if ev := h.Recorder.Events(); !slices.Equal(ev, []string{wantEvent}) {
		t.Fatalf("a node still waiting was told again; events:\n got %q\nwant %q", ev, []string{wantEvent})
	}

	// Drain whatever the handlers queued so far.
	for c.Queue().Len() > 0 {
		k, _ := c.Queue().Get()
		c.Queue().Done(k)
	}
	h.Fake.Remove("Node", "", "n1")
	h.WaitForCache()
	// The deletion enqueues the node that was waiting.
	h.Eventually(func() bool { return c.Queue().Len() > 0 }, "the waiting node to be enqueued")
	k, _ := c.Queue().Get()
	c.Queue().Done(k)
	if k != "n3" {
		t.Fatalf("enqueued %q, want n3", k)
	}
	h.Reconcile(c, "n3")
	expectActions(t, h, "update Node n3")
	expectCIDRs(t, h.Fake, "n2=10.244.1.0/24", "n3=10.244.0.0/24")
}

// gatedCluster holds back watch events while closed, so a test can make
// the controller's cache stale on purpose.
type gatedCluster struct {
	controllers.Cluster
	mu   sync.Mutex
	open chan struct{} // closed while events flow
}

func newGated(c controllers.Cluster) *gatedCluster {
	ch := make(chan struct{})
	close(ch)
	return &gatedCluster{Cluster: c, open: ch}
}

func (g *gatedCluster) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = make(chan struct{})
}

func (g *gatedCluster) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.open)
}

func (g *gatedCluster) gate() chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

func (g *gatedCluster) Watch(ctx context.Context, req *pb.WatchRequest) (controllers.Watch, error) {
	w, err := g.Cluster.Watch(ctx, req)
	if err != nil {
		return nil, err
	}
	return gatedWatch{w, g}, nil
}

type gatedWatch struct {
	controllers.Watch
	g *gatedCluster
}

func (w gatedWatch) Next(ctx context.Context) (*pb.WatchEvent, error) {
	ev, err := w.Watch.Next(ctx)
	select {
	case <-w.g.gate():
		return ev, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startInformers runs f until the test ends.
func startInformers(t *testing.T, h *controllertest.Harness, f *controllers.InformerFactory) {
	ctx, cancel := context.WithCancel(h.Context())
	f.Start(ctx)
	t.Cleanup(func() {
		cancel()
		f.Wait()
	})
}

func waitForCache(t *testing.T, f *controllers.InformerFactory, fake *controllertest.Fake) {
	t.Helper()
	controllertest.Eventually(t, 10*time.Second, func() bool {
		for _, inf := range f.Informers() {
			if !inf.HasSynced() || inf.ResourceVersion() < fake.KindVersion(inf.Kind()) {
				return false
			}
		}
		return true
	}, "the controller's cache to catch up")
}

// TestStaleCacheConflicts makes the controller decide on a stale view of a
// node: the Update's resourceVersion precondition fails, nothing is
// written, and the next reconcile on fresh data does the right thing.
func TestStaleCacheConflicts(t *testing.T) {
	tests := []struct {
		name   string
		change func(o *pb.Object) // what happens to n1 behind the cache's back
		want   []string
	}{
		{"a worker relabels the node", func(o *pb.Object) { o.Meta().Labels = map[string]string{"zone": "a"} },
			[]string{"n1=10.244.0.0/24", "n2=10.244.1.0/24"}},
		{"an earlier leader assigned a subnet", func(o *pb.Object) {
			o.GetNode().Spec.PodCidr = "10.244.7.0/24"
			o.GetNode().Spec.PodCidrs = []string{"10.244.7.0/24"}
		}, []string{"n1=10.244.7.0/24", "n2=10.244.0.0/24"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := controllertest.NewHarness(t, node("n1", ""), node("n2", ""))
			noDuplicates(t, h.Fake)
			gated := newGated(h.Fake)
			env := h.Env(Name)
			env.Informers = controllers.NewInformerFactory(gated, h.Logger, 0)
			c, err := New(env, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			startInformers(t, h, env.Informers)
			waitForCache(t, env.Informers, h.Fake)

			gated.hold()
			if err := h.Fake.Mutate("Node", "", "n1", tc.change); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Reconcile(h.Context(), "n1"); !controllers.IsConflict(err) {
				t.Fatalf("reconcile on a stale cache: err = %v, want a conflict", err)
			}
			gated.resume()
			waitForCache(t, env.Informers, h.Fake)
			for _, name := range []string{"n1", "n2"} {
				if _, err := c.Reconcile(h.Context(), name); err != nil {
					t.Fatalf("reconcile %s: %v", name, err)
				}
			}
			expectCIDRs(t, h.Fake, tc.want...)
		})
	}
}

// TestConflictRetriedByQueue runs the controller's loop; the first write
// fails with a conflict and the queue retries it.
func TestConflictRetriedByQueue(t *testing.T) {
	h, c := start(t, DefaultConfig(), node("n1", ""))
	var failed atomic.Bool
	h.Fake.PrependReactor(func(a controllertest.Action) (bool, error) {
		if a.Verb == "update" && a.Kind == "Node" && failed.CompareAndSwap(false, true) {
			return true, status.Error(codes.Aborted, "resourceVersion changed")
		}
		return false, nil
	})
	ctx, cancel := context.WithCancel(h.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	h.Eventually(func() bool { return h.Fake.Get("Node", "", "n1").GetNode().GetSpec().GetPodCidr() != "" }, "n1's pod CIDR")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	expectCIDRs(t, h.Fake, "n1=10.244.0.0/24")
	expectActions(t, h, "update Node n1", "update Node n1")
}

// TestDeletedWhileAssigning: a node deleted behind the cache's back makes
// the write fail; once the deletion is seen, the subnet reserved for it is
// free for the next node.
func TestDeletedWhileAssigning(t *testing.T) {
	h := controllertest.NewHarness(t, node("n1", ""), node("n2", ""))
	gated := newGated(h.Fake)
	env := h.Env(Name)
	env.Informers = controllers.NewInformerFactory(gated, h.Logger, 0)
	c, err := New(env, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	startInformers(t, h, env.Informers)
	waitForCache(t, env.Informers, h.Fake)

	gated.hold()
	h.Fake.Remove("Node", "", "n1")
	if _, err := c.Reconcile(h.Context(), "n1"); !controllers.IsNotFound(err) {
		t.Fatalf("reconcile of a node deleted behind the cache's back: err = %v, want NotFound", err)
	}
	gated.resume()
	h.Eventually(func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, reserved := c.byName["n1"]
		return !reserved
	}, "the reservation for the deleted n1 to be released")
	if _, err := c.Reconcile(h.Context(), "n2"); err != nil {
		t.Fatal(err)
	}
	expectCIDRs(t, h.Fake, "n2=10.244.0.0/24")
}

// validateWrites makes every create and update pass the API server's
// defaulting and validation, as it would have to.
func validateWrites(t *testing.T, f *controllertest.Fake) {
	f.PrependReactor(func(a controllertest.Action) (bool, error) {
		if a.Object == nil || (a.Verb != "create" && a.Verb != "update") {
			return false, nil
		}
		o := a.Object.Clone()
		pb.SetDefaults(o)
		if err := pb.Validate(o); err != nil {
			t.Errorf("%s: invalid: %v", a, err)
			return true, status.Error(codes.InvalidArgument, err.Error())
		}
		return false, nil
	})
}
