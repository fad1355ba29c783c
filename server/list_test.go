package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

// listChunksOf reads one List stream message by message, as it arrives.
func listChunksOf(ctx context.Context, c pb.ClusterClient, req *pb.ListRequest) ([]*pb.ListResponse, error) {
	stream, err := c.List(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*pb.ListResponse
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, chunk)
	}
}

// checkChunks checks the chunking contract of Cluster.List and returns the
// names listed and their resourceVersion: at least one message, every one
// with the same resourceVersion, each within listChunkBytes unless it
// carries a single object.
func checkChunks(chunks []*pb.ListResponse) (names map[string]bool, rv uint64, err error) {
	if len(chunks) == 0 {
		return nil, 0, errors.New("no message: even an empty list sends one with its resourceVersion")
	}
	names = map[string]bool{}
	rv = chunks[0].GetResourceVersion()
	for i, c := range chunks {
		if c.GetResourceVersion() != rv || rv == 0 {
			return nil, 0, fmt.Errorf("chunk %d has resourceVersion %d, chunk 0 has %d", i, c.GetResourceVersion(), rv)
		}
		// The bound is on the items; the resourceVersion field adds a few
		// bytes.
		if size := gproto.Size(c); len(c.GetItems()) > 1 && size > listChunkBytes+16 {
			return nil, 0, fmt.Errorf("chunk %d of %d objects is %d bytes, over the %d bound", i, len(c.GetItems()), size, listChunkBytes)
		}
		if len(c.GetItems()) == 0 && len(chunks) > 1 {
			return nil, 0, fmt.Errorf("chunk %d of %d is empty", i, len(chunks))
		}
		for _, o := range c.GetItems() {
			n := o.Meta().GetName()
			if names[n] {
				return nil, 0, fmt.Errorf("%s listed twice", n)
			}
			names[n] = true
		}
	}
	return names, rv, nil
}

// A List answer larger than any message limit comes in chunks of one
// snapshot, to a client with gRPC's default 4 MiB receive limit, from the
// leader and from a follower, linearizable and stale.
func TestListLargerThanMessageLimits(t *testing.T) {
	// Not parallel: megabytes of lists under -race starve the other
	// tests' masters of CPU, and their leaders lose their lease.
	servers := startCluster(t, testConfigs(t, 3, 3))
	leader := waitLeader(t, servers)
	follower := followers(servers, leader)[0]
	ctx := ctxT(t, 120*time.Second)

	// About 6 MB: 6 objects near the object limit, and 300 small ones
	// between them so that chunks hold many objects too.
	want := map[string]bool{}
	big := strings.Repeat("z", pb.MaxObjectBytes-8<<10)
	var lastRV uint64
	for i := range 306 {
		name, data := fmt.Sprintf("small-%03d", i), map[string]string{"k": strings.Repeat("v", 200)}
		if i%51 == 0 {
			name, data = fmt.Sprintf("big-%d", i/51), map[string]string{"data": big}
		}
		resp, err := leader.cluster().Create(ctx, &pb.WriteRequest{Object: configMap(name, data)})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		want[name] = true
		lastRV = resp.GetObject().Meta().GetResourceVersion()
	}

	for _, tc := range []struct {
		name  string
		ts    *testServer
		stale bool
	}{
		{"leader linearizable", leader, false},
		{"leader stale", leader, true},
		{"follower linearizable", follower, false},
		{"follower stale", follower, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &pb.ListRequest{Kind: "ConfigMap", Namespace: "default", Stale: tc.stale}
			check := func() error {
				chunks, err := listChunksOf(ctx, tc.ts.cluster(), req)
				if err != nil {
					return err
				}
				names, rv, err := checkChunks(chunks)
				if err != nil {
					return err
				}
				if len(chunks) < 6 {
					return fmt.Errorf("%d messages for about 6 MB, want at least 6", len(chunks))
				}
				if len(names) != len(want) || rv < lastRV {
					return fmt.Errorf("listed %d objects at resourceVersion %d, want %d at %d or later", len(names), rv, len(want), lastRV)
				}
				for n := range want {
					if !names[n] {
						return fmt.Errorf("%s missing", n)
					}
				}
				return nil
			}
			if !tc.stale {
				// Linearizable: every acknowledged write, at once.
				if err := check(); err != nil {
					t.Fatal(err)
				}
				return
			}
			// A stale read may trail the leader until it catches up.
			eventually(t, 20*time.Second, "a complete stale list", check)
		})
	}

	t.Run("whole list through CollectList", func(t *testing.T) {
		resp, err := pb.CollectList(follower.cluster().List(ctx, &pb.ListRequest{Kind: "ConfigMap", Namespace: "default"}))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetItems()) != len(want) || resp.GetResourceVersion() < lastRV {
			t.Fatalf("listed %d objects at %d, want %d at %d or later", len(resp.GetItems()), resp.GetResourceVersion(), len(want), lastRV)
		}
	})

	t.Run("empty list is one message", func(t *testing.T) {
		chunks, err := listChunksOf(ctx, leader.cluster(), &pb.ListRequest{Kind: "ConfigMap", Namespace: "nothing-here"})
		if err != nil {
			t.Fatal(err)
		}
		if _, rv, err := checkChunks(chunks); err != nil || len(chunks) != 1 || len(chunks[0].GetItems()) != 0 || rv < lastRV {
			t.Fatalf("empty list: %d messages %v (%v), want one without items at %d or later", len(chunks), chunks, err, lastRV)
		}
	})

	t.Run("an unknown kind is refused", func(t *testing.T) {
		_, err := listChunksOf(ctx, leader.cluster(), &pb.ListRequest{Kind: "Gadget"})
		wantStatus(t, err, codes.InvalidArgument, `unknown kind "Gadget"`)
	})
}

func TestListChunks(t *testing.T) {
	obj := func(name string, bytes int) *pb.Object {
		return configMap(name, map[string]string{"d": strings.Repeat("x", bytes)})
	}
	var many []*pb.Object
	for i := range 100 {
		many = append(many, obj(fmt.Sprintf("o%03d", i), 100))
	}
	// What one of many adds to a ListResponse (all are the same size).
	one := gproto.Size(&pb.ListResponse{Items: many[:1]})
	for _, tc := range []struct {
		name   string
		items  []*pb.Object
		limit  int
		chunks []int // items per chunk
	}{
		{"nothing is one empty chunk", nil, 1000, []int{0}},
		{"all fit", many[:3], 1 << 20, []int{3}},
		{"exactly full chunks", many, 10 * one, []int{10, 10, 10, 10, 10, 10, 10, 10, 10, 10}},
		{"a remainder", many[:25], 10*one + one/2, []int{10, 10, 5}},
		{"an object over the limit goes alone", []*pb.Object{many[0], obj("huge", 5000), many[1]}, 3 * one, []int{1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := listChunks(tc.items, (*pb.Object).SizeVT, tc.limit)
			var counts []int
			var all []*pb.Object
			for _, c := range got {
				counts = append(counts, len(c))
				all = append(all, c...)
				if size := gproto.Size(&pb.ListResponse{Items: c}); len(c) > 1 && size > tc.limit {
					t.Errorf("chunk of %d items is %d bytes, over %d", len(c), size, tc.limit)
				}
			}
			if fmt.Sprint(counts) != fmt.Sprint(tc.chunks) {
				t.Fatalf("items per chunk %v, want %v", counts, tc.chunks)
			}
			for i := range all {
				if all[i] != tc.items[i] {
					t.Fatalf("item %d out of order", i)
				}
			}
		})
	}
}

// A List streams only to carry its answer in chunks: many at once from one
// client do not count against the watch caps, and a List is rate limited
// like a unary call.
func TestListIsNotAWatch(t *testing.T) {
	// Not parallel: megabytes of lists under -race starve the other
	// tests' masters of CPU, and their leaders lose their lease.
	cfg := singleConfig(t)
	cfg.MaxWatchesPerClient, cfg.MaxWatches = 2, 2
	ts := startServer(t, cfg)
	waitLeader(t, []*testServer{ts})
	ctx := ctxT(t, 60*time.Second)
	c := pb.NewClusterClient(dialAPI(t, ts))
	// Large enough (about 2 MB) that a List's sends wait for the client.
	for i := range 2 {
		if _, err := c.Create(ctx, &pb.WriteRequest{Object: configMap(fmt.Sprintf("big-%d", i),
			map[string]string{"data": strings.Repeat("q", pb.MaxObjectBytes-8<<10)})}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 150)
	for range 150 {
		wg.Go(func() {
			resp, err := pb.CollectList(c.List(ctx, &pb.ListRequest{Kind: "ConfigMap", Namespace: "default"}))
			if err == nil && len(resp.GetItems()) != 2 {
				err = fmt.Errorf("listed %d objects, want 2", len(resp.GetItems()))
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("one of 150 concurrent lists by one client: %v", err)
	}
	for _, limit := range []string{"watches_per_client", "watches", "rate"} {
		if n := counterVecValue(t, ts.srv.metrics.reg, "skiff_api_rejected_total", limit); n != 0 {
			t.Fatalf("skiff_api_rejected_total{limit=%s} = %v after lists", limit, n)
		}
	}
	// Each List is timed as one request, as it was when unary.
	mfs, err := ts.srv.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var timed uint64
	for _, mf := range mfs {
		if mf.GetName() == "skiff_api_request_duration_seconds" {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "Cluster/List" {
					timed = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	if timed < 150 {
		t.Fatalf("skiff_api_request_duration_seconds{method=Cluster/List} counted %d lists, want 150 or more", timed)
	}

	t.Run("rate limited", func(t *testing.T) {
		cfg := singleConfig(t)
		cfg.MaxRequestsPerSecond, cfg.MaxRequestBurst = 2, 5
		ts := startServer(t, cfg)
		waitLeader(t, []*testServer{ts})
		c := pb.NewClusterClient(dialAPI(t, ts))
		var limited error
		for i := 0; i < 50 && limited == nil; i++ {
			_, err := pb.CollectList(c.List(ctx, &pb.ListRequest{Kind: "Namespace"}))
			if status.Code(err) == codes.ResourceExhausted {
				limited = err
			} else if err != nil {
				t.Fatal(err)
			}
		}
		wantStatus(t, limited, codes.ResourceExhausted, "rate limit of 2 requests/s exceeded for 127.0.0.1:")
		if _, ok := pb.RetryAfter(limited); !ok {
			t.Fatalf("a rate-limited List carries no retry delay: %v", limited)
		}
	})
}

// listStream is the ServerStream limitStream sees: only its context is
// used.
type listStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s listStream) Context() context.Context { return s.ctx }

// Lists open at the same time, all of one client, take no watch slot.
func TestLimitStreamListIsNoWatch(t *testing.T) {
	s := &Server{limits: newLimiter(limitsConfig{rps: 1000, burst: 2000, watchesPerClient: 2, watches: 2}, prometheus.NewRegistry())}
	caller := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}})
	info := &grpc.StreamServerInfo{FullMethod: pb.Cluster_List_FullMethodName, IsServerStream: true}
	const n = 150
	var entered sync.WaitGroup
	entered.Add(n)
	release := make(chan struct{})
	errs := make(chan error, n)
	var done sync.WaitGroup
	for range n {
		done.Go(func() {
			errs <- s.limitStream(nil, listStream{ctx: caller}, info, func(any, grpc.ServerStream) error {
				entered.Done()
				<-release
				return nil
			})
		})
	}
	entered.Wait() // all n handlers run at once
	s.limits.mu.Lock()
	watches := s.limits.watches
	s.limits.mu.Unlock()
	close(release)
	done.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if watches != 0 {
		t.Fatalf("%d open lists counted as %d watches", n, watches)
	}
	// Still one token each: a List is limited like a unary call.
	s.limits.cfg.rps, s.limits.cfg.burst = 1, 1
	s.limits.clients = map[string]*clientLimits{}
	ok := func(any, grpc.ServerStream) error { return nil }
	if err := s.limitStream(nil, listStream{ctx: caller}, info, ok); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, s.limitStream(nil, listStream{ctx: caller}, info, ok), codes.ResourceExhausted, "rate limit of 1 requests/s")
}

// A List stream is authorized as the unary List was, on its request: the
// same rule (read access to the kind) and, for a controller, Secrets
// without their data in every chunk.
func TestListAuthorized(t *testing.T) {
	t.Parallel()
	cfgs, token := secureConfigs(t, 1, 1)
	m := startServer(t, cfgs[0])
	waitLeader(t, []*testServer{m})
	ctx := ctxT(t, 60*time.Second)
	admin := m.cluster()
	if _, err := admin.Create(ctx, &pb.WriteRequest{Object: pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: TokenNamespace}})}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*pb.Object{
		tokenSecret("view01", "0123456789abcdefghijklmnopqrstuv", RoleViewer, "", time.Now().Add(time.Hour)),
		tokenSecret("ctrl01", "0123456789abcdefghijklmnopqrstuv", RoleController, "", time.Time{}),
	} {
		if _, err := admin.Create(ctx, &pb.WriteRequest{Object: s}); err != nil {
			t.Fatal(err)
		}
	}
	// Three Secrets of about 600 KB: more than one chunk.
	for i := range 3 {
		s := pb.Wrap(&pb.Secret{Metadata: &pb.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("db-%d", i)},
			StringData: map[string]string{"blob": strings.Repeat("s", 600<<10)}})
		if _, err := admin.Create(ctx, &pb.WriteRequest{Object: s}); err != nil {
			t.Fatal(err)
		}
	}
	_, ca := tokenCA(t, token)
	addr := m.srv.APIAddr()
	noCert := pb.NewClusterClient(dialWith(t, addr, credentials.NewTLS(pki.ClientConfig(ca.Pool(), nil, pki.MasterServerName, pki.OrgMaster))))
	with := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	secrets := &pb.ListRequest{Kind: "Secret", Namespace: "default"}

	_, err := listChunksOf(with("view01.0123456789abcdefghijklmnopqrstuv"), noCert, secrets)
	wantStatus(t, err, codes.PermissionDenied, `viewer token "view01" may not list secrets`, "role viewer may not read Secrets")
	if _, err := listChunksOf(with("view01.0123456789abcdefghijklmnopqrstuv"), noCert, &pb.ListRequest{Kind: "ConfigMap"}); err != nil {
		t.Fatalf("a viewer lists ConfigMaps: %v", err)
	}

	w1 := pb.NewClusterClient(dialWith(t, addr, credentials.NewTLS(pki.ClientConfig(ca.Pool(),
		issueFrom(t, ca, pki.NodeCNPrefix+"w1", pki.OrgNode), pki.MasterServerName, pki.OrgMaster))))
	_, err = listChunksOf(ctx, w1, secrets)
	wantStatus(t, err, codes.PermissionDenied, `node "w1" may not list secrets`)

	chunks, err := listChunksOf(with("ctrl01.0123456789abcdefghijklmnopqrstuv"), noCert, secrets)
	if err != nil {
		t.Fatalf("a controller lists Secrets: %v", err)
	}
	n := 0
	for _, c := range chunks {
		for _, o := range c.GetItems() {
			n++
			if s := o.GetSecret(); s.GetData() != nil || s.GetStringData() != nil {
				t.Fatalf("a controller's list shows the data of %s", s.GetMetadata().GetName())
			}
		}
	}
	if n != 3 {
		t.Fatalf("a controller listed %d Secrets in %d chunks, want 3", n, len(chunks))
	}
	// The admin gets the data: the same list is more than one chunk.
	chunks, err = listChunksOf(ctx, admin, secrets)
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) < 2 || len(chunks[0].GetItems()[0].GetSecret().GetData()["blob"]) != 600<<10 {
		t.Fatalf("the admin's list: %d chunks, first secret %v bytes", len(chunks), len(chunks[0].GetItems()[0].GetSecret().GetData()["blob"]))
	}
}
