package server

import (
	"fmt"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	pb "github.com/skiff-sh/skiff/proto"
)

// TestJoinedWrites: concurrent writes of different objects share raft
// entries, and so resourceVersions, each with its own answer; concurrent
// writes of one object never share one, so every state of an object has a
// resourceVersion of its own.
func TestJoinedWrites(t *testing.T) {
	t.Parallel()
	cfg := singleConfig(t)
	cfg.MaxRequestsPerSecond = 0 // rounds follow each other at once
	ts := startServer(t, cfg)
	waitLeader(t, []*testServer{ts})
	c := ts.cluster()
	waitDefaultNamespace(t, c)
	if _, err := c.Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap("shared", nil)}); err != nil {
		t.Fatal(err)
	}

	const creators, updaters = 24, 8
	joined := false
	deadline := time.Now().Add(30 * time.Second)
	for round := 0; !joined; round++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d rounds of %d concurrent creates no two shared an entry", round, creators)
		}
		ctx := ctxT(t, 20*time.Second)
		var (
			mu      sync.Mutex
			created = map[uint64][]string{} // resourceVersion -> names created there
			updates = map[uint64]int{}      // resourceVersion -> updates of "shared" there
			wg      sync.WaitGroup
		)
		for i := range creators + updaters {
			wg.Go(func() {
				if i >= creators {
					v := fmt.Sprintf("%d-%d", round, i)
					resp, err := c.Update(ctx, &pb.WriteRequest{Object: configMap("shared", map[string]string{"v": v})})
					if err != nil {
						t.Errorf("update of shared to %s: %v", v, err)
						return
					}
					if got := resp.GetObject().GetConfigMap().GetData()["v"]; got != v {
						t.Errorf("update to %s answered with %q", v, got)
					}
					mu.Lock()
					updates[resp.GetObject().Meta().GetResourceVersion()]++
					mu.Unlock()
					return
				}
				name := fmt.Sprintf("cm-%d-%d", round, i)
				resp, err := c.Create(ctx, &pb.WriteRequest{Object: configMap(name, map[string]string{"n": name})})
				if err != nil {
					t.Errorf("create %s: %v", name, err)
					return
				}
				if m := resp.GetObject().Meta(); m.GetName() != name || resp.GetObject().GetConfigMap().GetData()["n"] != name {
					t.Errorf("create %s answered with %s", name, m.GetName())
				}
				mu.Lock()
				created[resp.GetObject().Meta().GetResourceVersion()] = append(created[resp.GetObject().Meta().GetResourceVersion()], name)
				mu.Unlock()
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		for rv, n := range updates {
			if n > 1 {
				t.Fatalf("%d updates of one object got resourceVersion %d", n, rv)
			}
		}
		for rv, names := range created {
			if len(names) > 1 {
				joined = true
				// Each is stored as created, at the shared resourceVersion.
				for _, name := range names {
					got, err := c.Get(ctxT(t, 10*time.Second), &pb.GetRequest{Kind: "ConfigMap", Namespace: "default", Name: name})
					if err != nil {
						t.Fatal(err)
					}
					if m := got.GetObject().Meta(); m.GetResourceVersion() != rv {
						t.Fatalf("%s has resourceVersion %d, created at %d", name, m.GetResourceVersion(), rv)
					}
				}
			}
		}
	}
	var m dto.Metric
	if err := ts.srv.metrics.entryWrites.Write(&m); err != nil {
		t.Fatal(err)
	}
	h := m.GetHistogram()
	if h.GetSampleCount() == 0 || h.GetSampleSum() <= float64(h.GetSampleCount()) {
		t.Fatalf("skiff_raft_entry_writes: %d entries of %.0f writes, want some entries of several", h.GetSampleCount(), h.GetSampleSum())
	}
}
