package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

func TestThreeMasters(t *testing.T) {
	t.Parallel()
	top := t
	cfgs := testConfigs(t, 3, 3)
	task := newCountingTask()
	for i := range cfgs {
		cfgs[i].LeaderTasks = []LeaderTask{task.forMaster(cfgs[i].Name)}
		// Snapshot and compact often, so a master that was down catches
		// up by InstallSnapshot rather than by log replay.
		cfgs[i].SnapshotThreshold = 32
		cfgs[i].TrailingLogs = 8
		cfgs[i].SnapshotInterval = 100 * time.Millisecond
	}
	servers := startCluster(t, cfgs)
	leader := waitLeader(t, servers)
	fs := followers(servers, leader)

	// The leader task runs on the leader only.
	onlyOn := func(t *testing.T, name string) {
		t.Helper()
		eventually(t, 10*time.Second, "leader task only on "+name, func() error {
			running, _ := task.snapshot()
			if len(running) != 1 || running[name] != 1 {
				return fmt.Errorf("running: %v", running)
			}
			return nil
		})
	}
	onlyOn(t, leader.cfg.Name)

	t.Run("bootstrap", func(t *testing.T) {
		want := raftConfigOf(t, leader)
		if len(want) != 3 {
			t.Fatalf("leader configuration has %d servers, want 3: %v", len(want), want)
		}
		for _, ts := range servers {
			eventually(t, 5*time.Second, ts.cfg.Name+" configuration", func() error {
				if got := raftConfigOf(t, ts); !slices.Equal(got, want) {
					return fmt.Errorf("%s has %v, leader has %v", ts.cfg.Name, got, want)
				}
				return nil
			})
		}
		// Followers apply the first entries a moment after they are elected.
		eventually(t, 5*time.Second, "status", func() error {
			st, err := fs[0].operator().Status(ctxT(t, 10*time.Second), &pb.StatusRequest{})
			if err != nil {
				return err
			}
			if st.GetLeader() != leader.cfg.Name || st.GetWarning() != "" || len(st.GetServers()) != 3 || len(st.GetMembers()) != 3 {
				return fmt.Errorf("status: %v", st)
			}
			for _, s := range st.GetServers() {
				wantState := "Follower"
				if s.GetName() == leader.cfg.Name {
					wantState = "Leader"
				}
				if s.GetState() != wantState || !s.GetVoter() || s.GetApiAddress() == "" || s.GetAppliedIndex() == 0 {
					return fmt.Errorf("server status %v: want state %s, voter, api address, applied index", s, wantState)
				}
			}
			return nil
		})
	})

	t.Run("system namespaces on every master", func(t *testing.T) {
		for _, ts := range servers {
			for _, ns := range []string{"default", "kube-node-lease"} {
				eventually(t, 5*time.Second, ns+" namespace on "+ts.cfg.Name, func() error {
					_, err := ts.srv.FSM().Get("Namespace", "", ns)
					return err
				})
			}
		}
	})

	t.Run("write on a follower is forwarded", func(t *testing.T) {
		resp, err := fs[0].cluster().Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap("fwd", map[string]string{"a": "1"})})
		if err != nil {
			t.Fatal(err)
		}
		m := resp.GetObject().Meta()
		if resp.GetAction() != "created" || m.GetUid() == "" || m.GetResourceVersion() == 0 {
			t.Fatalf("create response: %v", resp)
		}
		// Acknowledged means applied on the leader.
		if _, err := leader.srv.FSM().Get("ConfigMap", "default", "fwd"); err != nil {
			t.Fatalf("leader store after an acknowledged write: %v", err)
		}
	})

	t.Run("read your write on the other follower", func(t *testing.T) {
		for i := range 20 {
			name := fmt.Sprintf("ryw-%d", i)
			if _, err := fs[0].cluster().Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap(name, nil)}); err != nil {
				t.Fatal(err)
			}
			got, err := fs[1].cluster().Get(ctxT(t, 10*time.Second), &pb.GetRequest{Kind: "configmaps", Namespace: "default", Name: name})
			if err != nil {
				t.Fatalf("linearizable get of %s right after its write: %v", name, err)
			}
			if got.GetObject().Meta().GetName() != name {
				t.Fatalf("got %v", got)
			}
		}
		list, err := pb.CollectList(fs[1].cluster().List(ctxT(t, 10*time.Second), &pb.ListRequest{Kind: "ConfigMap", Namespace: "default"}))
		if err != nil {
			t.Fatal(err)
		}
		if len(list.GetItems()) != 21 || list.GetResourceVersion() == 0 {
			t.Fatalf("list: %d items at %d", len(list.GetItems()), list.GetResourceVersion())
		}
	})

	t.Run("stale read", func(t *testing.T) {
		eventually(t, 5*time.Second, "stale read", func() error {
			_, err := fs[1].cluster().Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "ConfigMap", Namespace: "default", Name: "ryw-19", Stale: true})
			return err
		})
		_, err := fs[1].cluster().Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "ConfigMap", Namespace: "default", Name: "missing", Stale: true})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("stale get of a missing object: %v", err)
		}
	})

	t.Run("watch from a resourceVersion across masters", func(t *testing.T) {
		list, err := pb.CollectList(fs[0].cluster().List(ctxT(t, 10*time.Second), &pb.ListRequest{Kind: "ConfigMap"}))
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for i := range 5 {
			name := fmt.Sprintf("w-%d", i)
			want = append(want, name)
			if _, err := leader.cluster().Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap(name, nil)}); err != nil {
				t.Fatal(err)
			}
		}
		ctx := ctxT(t, 10*time.Second)
		stream, err := fs[1].cluster().Watch(ctx, &pb.WatchRequest{Kind: "ConfigMap", Namespace: "default", ResourceVersion: list.GetResourceVersion()})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		var last uint64
		for len(got) < len(want) {
			ev, err := stream.Recv()
			if err != nil {
				t.Fatalf("watch after %v: %v", got, err)
			}
			if ev.GetType() != "ADDED" || ev.GetResourceVersion() <= last {
				t.Fatalf("event %v after resourceVersion %d", ev, last)
			}
			last = ev.GetResourceVersion()
			got = append(got, ev.GetObject().Meta().GetName())
		}
		if !slices.Equal(got, want) {
			t.Fatalf("watched %v, want %v", got, want)
		}

		// Bookmarks arrive when asked for, at an index past what was seen.
		bctx := ctxT(t, 10*time.Second)
		bs, err := fs[0].cluster().Watch(bctx, &pb.WatchRequest{Kind: "ConfigMap", ResourceVersion: last, BookmarkSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		ev, err := bs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetType() != "BOOKMARK" || ev.GetResourceVersion() < last {
			t.Fatalf("want a bookmark at >= %d, got %v", last, ev)
		}
	})

	t.Run("errors", func(t *testing.T) {
		c := fs[0].cluster()
		ctx := ctxT(t, 20*time.Second)
		_, err := c.Create(ctx, &pb.WriteRequest{Object: configMap("fwd", nil)})
		if status.Code(err) != codes.AlreadyExists {
			t.Errorf("create existing: %v", err)
		}
		stale := configMap("fwd", map[string]string{"a": "2"})
		stale.Meta().ResourceVersion = 1
		_, err = c.Update(ctx, &pb.WriteRequest{Object: stale})
		if status.Code(err) != codes.Aborted {
			t.Errorf("update with a stale resourceVersion: %v", err)
		}
		_, err = c.Get(ctx, &pb.GetRequest{Kind: "ConfigMap", Namespace: "default", Name: "nope"})
		if status.Code(err) != codes.NotFound {
			t.Errorf("get missing: %v", err)
		}
		_, err = c.Get(ctx, &pb.GetRequest{Kind: "Gizmo", Name: "x"})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("unknown kind: %v", err)
		}
		_, err = c.Create(ctx, &pb.WriteRequest{Object: configMap("", nil)})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("invalid object: %v", err)
		}
		big := configMap("big", map[string]string{"k": strings.Repeat("x", pb.MaxObjectBytes)})
		_, err = c.Create(ctx, &pb.WriteRequest{Object: big})
		if code := status.Code(err); (code != codes.ResourceExhausted && code != codes.InvalidArgument) || !strings.Contains(err.Error(), "limit") {
			t.Errorf("oversized object: %v", err)
		}
		dry, err := c.Create(ctx, &pb.WriteRequest{Object: configMap("dry", nil), DryRun: true})
		if err != nil || dry.GetAction() != "created" {
			t.Errorf("dry run: %v %v", dry, err)
		}
		if _, err := leader.srv.FSM().Get("ConfigMap", "default", "dry"); err == nil {
			t.Errorf("dry run stored the object")
		}
		gen := configMap("", nil)
		gen.Meta().GenerateName = "gen-"
		resp, err := c.Create(ctx, &pb.WriteRequest{Object: gen})
		if err != nil || !strings.HasPrefix(resp.GetObject().Meta().GetName(), "gen-") || len(resp.GetObject().Meta().GetName()) != 9 {
			t.Errorf("generateName: %v %v", resp, err)
		}
		del, err := c.Delete(ctx, &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: "fwd"}})
		if err != nil || del.GetAction() != "deleted" {
			t.Errorf("delete: %v %v", del, err)
		}
		br, err := c.Bind(ctx, &pb.BindRequest{Binds: []*pb.BindOp{
			{Namespace: "default", Name: "p1", NodeName: "n1"},
			{Namespace: "default", Name: "p2", NodeName: "n1"},
		}})
		if err != nil || len(br.GetResults()) != 2 || br.GetResults()[0].GetCode() != int32(codes.NotFound) {
			t.Errorf("bind of missing pods: %v %v", br, err)
		}
	})

	t.Run("http", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			for _, ts := range servers {
				var body string
				eventually(t, 5*time.Second, path, func() error {
					resp, err := http.Get("http://" + ts.srv.HTTPAddr() + path)
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					b, _ := io.ReadAll(resp.Body)
					body = string(b)
					if resp.StatusCode != 200 {
						return fmt.Errorf("%s on %s: %d %s", path, ts.cfg.Name, resp.StatusCode, body)
					}
					return nil
				})
				if path == "/metrics" {
					for _, m := range []string{"skiff_api_requests_total", "skiff_raft_commit_index", "skiff_objects", "skiff_raft_state",
						"skiff_watch_window_start_index"} {
						if !strings.Contains(body, m) {
							t.Errorf("%s /metrics lacks %s", ts.cfg.Name, m)
						}
					}
					// Every master has written raft entries by now.
					if strings.Contains(body, "\nskiff_raft_log_write_entries_count 0\n") || !strings.Contains(body, "\nskiff_raft_log_write_entries_count ") {
						t.Errorf("%s /metrics counts no raft log writes", ts.cfg.Name)
					}
					// ... keeps their events for watches ...
					for _, m := range []string{"skiff_watch_window_events", "skiff_watch_window_bytes"} {
						if strings.Contains(body, "\n"+m+" 0\n") || !strings.Contains(body, "\n"+m+" ") {
							t.Errorf("%s /metrics: %s missing or 0", ts.cfg.Name, m)
						}
					}
					// ... and keeps the newest entries in memory.
					if strings.Contains(body, "\nskiff_raft_log_cache_bytes 0\n") || !strings.Contains(body, "\nskiff_raft_log_cache_bytes ") {
						t.Errorf("%s /metrics shows no cached raft entries", ts.cfg.Name)
					}
				}
			}
		}
	})

	t.Run("transfer leadership", func(t *testing.T) {
		target := fs[0]
		resp, err := fs[1].operator().TransferLeadership(ctxT(t, 20*time.Second), &pb.TransferLeadershipRequest{To: target.cfg.Name})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetLeader() != target.cfg.Name {
			t.Fatalf("new leader %q, want %s", resp.GetLeader(), target.cfg.Name)
		}
		leader = waitLeader(t, servers)
		if leader != target {
			t.Fatalf("leader is %s", leader.cfg.Name)
		}
		fs = followers(servers, leader)
		// The old leader stopped its task; the new one started its own.
		onlyOn(t, leader.cfg.Name)
	})

	t.Run("restarted master catches up", func(t *testing.T) {
		victim := fs[0]
		victim.stop()
		downAt := leader.srv.raft.LastIndex()
		for i := range 100 {
			if _, err := fs[1].cluster().Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap(fmt.Sprintf("while-down-%d", i), nil)}); err != nil {
				t.Fatal(err)
			}
		}
		restarted := startServer(top, victim.cfg) // outlives this subtest
		servers = []*testServer{leader, fs[1], restarted}
		eventually(t, 20*time.Second, "restarted master caught up", func() error {
			got, want := restarted.srv.FSM().StateHash(), leader.srv.FSM().StateHash()
			if got != want {
				return fmt.Errorf("state hash %s, leader %s", got, want)
			}
			return nil
		})
		if _, err := restarted.cluster().Get(ctxT(t, 10*time.Second), &pb.GetRequest{Kind: "ConfigMap", Namespace: "default", Name: "while-down-99"}); err != nil {
			t.Fatal(err)
		}
		// The leader compacted its log past where the master stopped, so it
		// can only have caught up from a snapshot sent by the leader.
		if snap, _ := strconv.ParseUint(restarted.srv.raft.Stats()["last_snapshot_index"], 10, 64); snap <= downAt {
			t.Errorf("restarted master's last snapshot is at %d, before it stopped (%d): no snapshot was installed", snap, downAt)
		}
		waitLeader(t, servers)
		fs = followers(servers, leader)
	})

	t.Run("graceful shutdown of the leader transfers leadership", func(t *testing.T) {
		old := leader
		old.stop()
		// Run returned only after a successor won: no survivor should have
		// to wait for an election timeout.
		var newLeader string
		for _, ts := range fs {
			if ts.srv.IsLeader() {
				newLeader = ts.cfg.Name
			}
		}
		if newLeader == "" {
			t.Fatalf("no survivor leads right after the leader's graceful shutdown")
		}
		leader = waitLeader(t, fs)
		if _, err := fs[0].cluster().Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap("after-handoff", nil)}); err != nil {
			t.Fatal(err)
		}
		st, err := leader.operator().Status(ctxT(t, 10*time.Second), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		unreachable := 0
		for _, s := range st.GetServers() {
			if s.GetState() == "Unreachable" {
				unreachable++
			}
		}
		if unreachable != 1 {
			t.Errorf("status after stopping one master: %v", st)
		}
	})
}

// TestLeaderLossDuringWrites stops the leader while clients write through
// the followers, gracefully (leadership is handed over) or as a crash (no
// handover, connections cut, gossip not told). Every acknowledged write must
// survive, every write reported as not applied must be absent, and writes
// must continue.
func TestLeaderLossDuringWrites(t *testing.T) {
	t.Parallel()
	for _, crash := range []bool{false, true} {
		name := "graceful"
		if crash {
			name = "crash"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testLeaderLoss(t, crash)
		})
	}
}

// crash stops the master the way a killed process would look to the others.
func (ts *testServer) crash() {
	s := ts.srv
	s.grpc.Stop()
	s.gossip.shutdown()
	_ = s.raft.Shutdown().Error()
	ts.stop()
}

func testLeaderLoss(t *testing.T, crash bool) {
	cfgs := testConfigs(t, 3, 3)
	for i := range cfgs {
		cfgs[i].NoLeaderWait = 2 * time.Second
	}
	servers := startCluster(t, cfgs)
	leader := waitLeader(t, servers)
	fs := followers(servers, leader)

	type outcome struct {
		name string
		code codes.Code
		msg  string
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
	)
	stopWriters := make(chan struct{})
	var wg sync.WaitGroup
	const writers = 6
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			target := fs[w%len(fs)]
			for i := 0; ; i++ {
				select {
				case <-stopWriters:
					return
				default:
				}
				name := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				_, err := target.cluster().Create(ctx, &pb.WriteRequest{Object: configMap(name, nil)})
				cancel()
				st := status.Convert(err)
				mu.Lock()
				outcomes = append(outcomes, outcome{name, st.Code(), st.Message()})
				mu.Unlock()
			}
		}()
	}
	okCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, o := range outcomes {
			if o.code == codes.OK {
				n++
			}
		}
		return n
	}
	eventually(t, 20*time.Second, "writes before the leader stops", func() error {
		if n := okCount(); n < 30 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})
	if crash {
		leader.crash()
	} else {
		leader.stop()
	}
	before := okCount()
	newLeader := waitLeader(t, fs)
	eventually(t, 20*time.Second, "writes after the new leader", func() error {
		if n := okCount(); n < before+30 {
			return fmt.Errorf("%d acknowledged, %d before the leader stopped", n, before)
		}
		return nil
	})
	close(stopWriters)
	wg.Wait()

	counts := map[codes.Code]int{}
	for _, o := range outcomes {
		counts[o.code]++
		var found bool
		for _, ts := range fs {
			resp, err := ts.cluster().Get(ctxT(t, 10*time.Second), &pb.GetRequest{Kind: "ConfigMap", Namespace: "default", Name: o.name})
			switch {
			case err == nil && resp.GetObject() != nil:
				found = true
			case status.Code(err) == codes.NotFound:
				if found {
					t.Errorf("%s: found on one survivor but not on %s", o.name, ts.cfg.Name)
				}
			default:
				t.Fatalf("get %s on %s: %v", o.name, ts.cfg.Name, err)
			}
		}
		switch o.code {
		case codes.OK:
			if !found {
				t.Errorf("acknowledged write %s is lost", o.name)
			}
		case codes.Unavailable:
			if found {
				t.Errorf("write %s failed with Unavailable (%s) but was applied", o.name, o.msg)
			}
		case codes.Unknown:
			// Either way is correct.
			if counts[codes.Unknown] <= 3 {
				t.Logf("unknown outcome of %s (applied: %v): %s", o.name, found, o.msg)
			}
		default:
			t.Errorf("write %s: unexpected outcome %s: %s", o.name, o.code, o.msg)
		}
	}
	t.Logf("outcomes: %v (new leader %s)", counts, newLeader.cfg.Name)

	// With two of three masters gone there is no quorum: writes wait
	// NoLeaderWait and fail with Unavailable saying what to do (one in
	// flight as leadership is lost may end Unknown).
	survivor, other := fs[0], fs[1]
	other.stop()
	eventually(t, 30*time.Second, "no leader error", func() error {
		start := time.Now()
		_, err := survivor.cluster().Create(ctxT(t, 20*time.Second), &pb.WriteRequest{Object: configMap(fmt.Sprintf("noquorum-%d", start.UnixNano()), nil)})
		switch code := status.Code(err); {
		case code == codes.Unavailable && pb.IsNotApplied(err) && strings.Contains(err.Error(), "skiff cluster status"):
			if d := time.Since(start); d < survivor.cfg.NoLeaderWait/2 {
				return fmt.Errorf("failed after %v, before waiting for a leader", d)
			}
			return nil
		case code == codes.Unknown, code == codes.Unavailable:
			return fmt.Errorf("not yet: %v", err)
		default:
			t.Fatalf("write without quorum: %v", err)
		}
		return nil
	})
	if a, b := fs[0].srv.FSM().StateHash(), fs[1].srv.FSM().StateHash(); a != b {
		eventually(t, 5*time.Second, "survivors converge", func() error {
			if a, b := fs[0].srv.FSM().StateHash(), fs[1].srv.FSM().StateHash(); a != b {
				return fmt.Errorf("%s != %s", a, b)
			}
			return nil
		})
	}
}

// TestJoinAndRemove grows a single master into three by gossip alone (the
// leader adds alive masters as voters), then removes a stopped one.
func TestJoinAndRemove(t *testing.T) {
	t.Parallel()
	cfgs := testConfigs(t, 3, 0)
	cfgs[0].BootstrapExpect = 1
	first := startServer(t, cfgs[0])
	waitLeader(t, []*testServer{first})
	second := startServer(t, cfgs[1])

	voters := func(n int) func() error {
		return func() error {
			got := raftConfigOf(t, first)
			for _, s := range got {
				if !strings.HasSuffix(s, "/voter") {
					return fmt.Errorf("configuration %v", got)
				}
			}
			if len(got) != n {
				return fmt.Errorf("configuration %v, want %d voters", got, n)
			}
			return nil
		}
	}
	eventually(t, 15*time.Second, "second master added", voters(2))
	eventually(t, 10*time.Second, "even voters warning", func() error {
		st, err := second.operator().Status(ctxT(t, 10*time.Second), &pb.StatusRequest{})
		if err != nil {
			return err
		}
		if !strings.Contains(st.GetWarning(), "even") {
			return fmt.Errorf("two voters, want a warning: %q", st.GetWarning())
		}
		return nil
	})
	third := startServer(t, cfgs[2])
	eventually(t, 15*time.Second, "third master added", voters(3))
	all := []*testServer{first, second, third}
	waitLeader(t, all)
	eventually(t, 10*time.Second, "joined master has the data", func() error {
		_, err := third.srv.FSM().Get("Namespace", "", "default")
		return err
	})

	_, err := first.operator().RemovePeer(ctxT(t, 10*time.Second), &pb.RemovePeerRequest{Name: third.cfg.Name})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("remove a live master: %v", err)
	}
	third.stop()
	eventually(t, 15*time.Second, "stopped master removed", func() error {
		_, err := second.operator().RemovePeer(ctxT(t, 10*time.Second), &pb.RemovePeerRequest{Name: third.cfg.Name})
		return err
	})
	eventually(t, 10*time.Second, "two voters left", voters(2))
}
