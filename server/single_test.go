package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

func singleConfig(t *testing.T) Config {
	cfg := testConfigs(t, 1, 1)[0]
	cfg.Join = nil
	return cfg
}

func TestSingleMaster(t *testing.T) {
	t.Parallel()
	top := t
	cfg := singleConfig(t)
	cfg.EventWindow = 16
	ts := startServer(t, cfg)
	waitLeader(t, []*testServer{ts})
	c := ts.cluster()

	for i := range 40 {
		if _, err := c.Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap(fmt.Sprintf("cm-%d", i), nil)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Get(ctxT(t, 10*time.Second), &pb.GetRequest{Kind: "cm", Namespace: "default", Name: "cm-39"})
	if err != nil || got.GetObject().Meta().GetName() != "cm-39" {
		t.Fatalf("get: %v %v", got, err)
	}

	t.Run("pods: status-only update and bind", func(t *testing.T) {
		ctx := ctxT(t, 20*time.Second)
		pod := pb.Wrap(&pb.Pod{
			Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default"},
			Spec:     &pb.PodSpec{Containers: []*pb.Container{{Name: "c", Image: "busybox"}}},
		})
		if _, err := c.Create(ctx, &pb.WriteRequest{Object: pod}); err != nil {
			t.Fatal(err)
		}
		// A status update need not carry the spec.
		st := pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default"}, Status: &pb.PodStatus{Phase: "Running"}})
		resp, err := c.UpdateStatus(ctx, &pb.WriteRequest{Object: st})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetObject().GetPod(); got.GetStatus().GetPhase() != "Running" || len(got.GetSpec().GetContainers()) != 1 {
			t.Fatalf("after status update: %v", got)
		}
		br, err := c.Bind(ctx, &pb.BindRequest{Binds: []*pb.BindOp{
			{Namespace: "default", Name: "web", NodeName: "n1"},
			{Namespace: "default", Name: "web", NodeName: "n2"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		r := br.GetResults()
		if len(r) != 2 || r[0].GetCode() != 0 || r[0].GetObject().GetPod().GetSpec().GetNodeName() != "n1" || r[1].GetCode() != int32(codes.Aborted) {
			t.Fatalf("bind results: %v", r)
		}
	})

	t.Run("expired watch", func(t *testing.T) {
		s, err := c.Watch(ctxT(t, 10*time.Second), &pb.WatchRequest{Kind: "ConfigMap", ResourceVersion: 1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		if status.Code(err) != codes.OutOfRange || !strings.Contains(err.Error(), "list again") {
			t.Fatalf("watch from an expired resourceVersion: %v", err)
		}
	})

	t.Run("status", func(t *testing.T) {
		st, err := ts.operator().Status(ctxT(t, 10*time.Second), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetLeader() != cfg.Name || len(st.GetServers()) != 1 || st.GetWarning() != "" || st.GetServers()[0].GetState() != "Leader" {
			t.Fatalf("status: %v", st)
		}
	})

	t.Run("remove the last voter is refused", func(t *testing.T) {
		_, err := ts.operator().RemovePeer(ctxT(t, 10*time.Second), &pb.RemovePeerRequest{Name: cfg.Name})
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("remove last voter: %v", err)
		}
		_, err = ts.operator().RemovePeer(ctxT(t, 10*time.Second), &pb.RemovePeerRequest{Name: "nobody"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("remove unknown: %v", err)
		}
	})

	t.Run("restart keeps the data", func(t *testing.T) {
		hash := ts.srv.FSM().StateHash()
		ts.stop()
		ts2 := startServer(top, cfg)
		waitLeader(t, []*testServer{ts2})
		if got := ts2.srv.FSM().StateHash(); got != hash {
			t.Fatalf("state after restart %s, before %s", got, hash)
		}
		if _, err := ts2.cluster().Get(ctxT(t, 10*time.Second), &pb.GetRequest{Kind: "ConfigMap", Namespace: "default", Name: "cm-7"}); err != nil {
			t.Fatal(err)
		}
		ts = ts2
	})
}

func TestSnapshotSaveRestore(t *testing.T) {
	t.Parallel()
	src := startServer(t, singleConfig(t))
	waitLeader(t, []*testServer{src})
	for i := range 25 {
		if _, err := src.cluster().Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap(fmt.Sprintf("snap-%d", i), map[string]string{"i": fmt.Sprint(i)})}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := src.operator().SnapshotSave(ctxT(t, 20*time.Second), &pb.SnapshotSaveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		snap.Write(chunk.GetData())
	}
	// Saved after the writes, so it must contain all of them.
	wantHash := src.srv.FSM().StateHash()
	want := listNames(t, src)

	dst := startServer(t, singleConfig(t))
	waitLeader(t, []*testServer{dst})
	if _, err := dst.cluster().Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap("replaced", nil)}); err != nil {
		t.Fatal(err)
	}

	t.Run("garbage is rejected", func(t *testing.T) {
		up, err := dst.operator().SnapshotRestore(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := up.Send(&pb.SnapshotChunk{Data: []byte("not a snapshot")}); err != nil {
			t.Fatal(err)
		}
		if _, err := up.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("restore of garbage: %v", err)
		}
	})

	up, err := dst.operator().SnapshotRestore(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	data := snap.Bytes()
	for len(data) > 0 {
		n := min(len(data), 64<<10)
		if err := up.Send(&pb.SnapshotChunk{Data: data[:n]}); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	if _, err := up.CloseAndRecv(); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := listNames(t, dst); !slices.Equal(got, want) {
		t.Fatalf("after restore: %v, want %v", got, want)
	}
	if got := dst.srv.FSM().StateHash(); got != wantHash {
		t.Fatalf("state hash after restore %s, want %s", got, wantHash)
	}
	// The restored cluster keeps working.
	if _, err := dst.cluster().Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap("after-restore", nil)}); err != nil {
		t.Fatal(err)
	}
}

func listNames(t *testing.T, ts *testServer) []string {
	t.Helper()
	list, err := pb.CollectList(ts.cluster().List(ctxT(t, 10*time.Second), &pb.ListRequest{Kind: "ConfigMap"}))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range list.GetItems() {
		m := o.Meta()
		out = append(out, m.GetName()+"/"+m.GetUid())
	}
	return out
}

// TestShutdownLeaksNothing runs before the parallel tests (it is not
// parallel itself), so the process's goroutines and files are its own.
func TestShutdownLeaksNothing(t *testing.T) {
	countFDs := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatalf("count open files: %v (the masters run on Linux, which has /proc/self/fd)", err)
		}
		return len(ents)
	}
	goroutines, fds := runtime.NumGoroutine(), countFDs()

	ts := startServer(t, singleConfig(t))
	waitLeader(t, []*testServer{ts})
	if _, err := ts.cluster().Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap("x", nil)}); err != nil {
		t.Fatal(err)
	}
	w, err := ts.cluster().Watch(context.Background(), &pb.WatchRequest{Kind: "ConfigMap"})
	if err != nil {
		t.Fatal(err)
	}
	watchDone := make(chan error, 1)
	go func() {
		for {
			ev, err := w.Recv()
			if err != nil {
				watchDone <- err
				return
			}
			if ev.GetType() != "BOOKMARK" {
				watchDone <- fmt.Errorf("unexpected event %s", ev.GetType())
				return
			}
		}
	}()
	resp, err := http.Get("http://" + ts.srv.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()

	ts.stop()
	select {
	case err := <-watchDone:
		if !errors.Is(err, io.EOF) {
			t.Errorf("watch ended with %v, want a clean end of stream", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end on shutdown")
	}
	eventually(t, 10*time.Second, "goroutines and files released", func() error {
		if g, f := runtime.NumGoroutine(), countFDs(); g > goroutines || f > fds {
			return fmt.Errorf("goroutines %d (before %d), fds %d (before %d)", g, goroutines, f, fds)
		}
		return nil
	})
}

func TestNewFailsCleanly(t *testing.T) {
	t.Parallel()
	cfg := singleConfig(t)
	ts := startServer(t, cfg)

	// Same data dir: the raft log is locked by the running master.
	dup := cfg
	dup.RaftAddr, dup.GossipAddr = addr(freePort(t)), addr(freePort(t))
	if _, err := New(dup); err == nil || !strings.Contains(err.Error(), "another master") {
		t.Fatalf("New on a data dir in use: %v", err)
	}
	// Same gossip port: everything opened before it is released again.
	other := singleConfig(t)
	other.GossipAddr = ts.srv.GossipAddr()
	if _, err := New(other); err == nil || !strings.Contains(err.Error(), "gossip") {
		t.Fatalf("New on a gossip port in use: %v", err)
	}
	other.GossipAddr = addr(freePort(t))
	s, err := New(other) // its raft port and data dir were released
	if err != nil {
		t.Fatalf("New after a failed New with the same raft address: %v", err)
	}
	s.closeAll()
}
