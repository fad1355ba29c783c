package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "github.com/skiff-sh/skiff/proto"
)

// slowStopTask is a leader task that, told to stop, keeps running until
// the test releases it (an informer listing a large store, say). It
// records per master how many copies run and the most that ever ran at
// once.
type slowStopTask struct {
	release chan struct{}

	mu      sync.Mutex
	running map[string]int
	most    map[string]int
	starts  map[string]int
}

func (s *slowStopTask) forMaster(name string) LeaderTask { return slowStopMaster{s, name} }

func (s *slowStopTask) counts(name string) (running, most, starts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[name], s.most[name], s.starts[name]
}

type slowStopMaster struct {
	s    *slowStopTask
	name string
}

func (m slowStopMaster) Name() string { return "slow-stop" }

func (m slowStopMaster) Run(ctx context.Context) error {
	s := m.s
	s.mu.Lock()
	s.running[m.name]++
	s.starts[m.name]++
	s.most[m.name] = max(s.most[m.name], s.running[m.name])
	s.mu.Unlock()
	<-ctx.Done()
	<-s.release
	s.mu.Lock()
	s.running[m.name]--
	s.mu.Unlock()
	return nil
}

// TestLeadershipRegainedWhileTasksStop: a master that loses leadership and
// wins it back while its leader tasks are still stopping serves writes at
// once, and starts its tasks again only once the old ones have returned.
func TestLeadershipRegainedWhileTasksStop(t *testing.T) {
	t.Parallel()
	task := &slowStopTask{release: make(chan struct{}), running: map[string]int{}, most: map[string]int{}, starts: map[string]int{}}
	released := sync.OnceFunc(func() { close(task.release) })
	t.Cleanup(released) // the masters' shutdown waits for their tasks
	cfgs := testConfigs(t, 3, 3)
	for i := range cfgs {
		cfgs[i].LeaderTasks = []LeaderTask{task.forMaster(cfgs[i].Name)}
	}
	servers := startCluster(t, cfgs)
	a := waitLeader(t, servers)
	eventually(t, 10*time.Second, "the task running on "+a.cfg.Name, func() error {
		if running, _, _ := task.counts(a.cfg.Name); running != 1 {
			return fmt.Errorf("%d running", running)
		}
		return nil
	})
	b := followers(servers, a)[0]
	transfer := func(to *testServer) {
		t.Helper()
		if _, err := a.operator().TransferLeadership(ctxT(t, 20*time.Second), &pb.TransferLeadershipRequest{To: to.cfg.Name}); err != nil {
			t.Fatalf("transfer to %s: %v", to.cfg.Name, err)
		}
		if l := waitLeader(t, servers); l != to {
			t.Fatalf("leader %s, want %s", l.cfg.Name, to.cfg.Name)
		}
	}
	transfer(b)
	transfer(a) // a's first task is still stopping

	// a serves writes (it is the leader and ready: waitLeader checked).
	for i := range 5 {
		if _, err := b.cluster().Create(ctxT(t, 5*time.Second), &pb.WriteRequest{Object: configMap(fmt.Sprintf("back-%d", i), nil)}); err != nil {
			t.Fatalf("write %d after a regained leadership: %v", i, err)
		}
	}
	if running, _, starts := task.counts(a.cfg.Name); running != 1 || starts != 1 {
		t.Fatalf("on %s while its first task stops: %d running, %d started; want only the first", a.cfg.Name, running, starts)
	}

	released()
	eventually(t, 10*time.Second, "the task started again on "+a.cfg.Name, func() error {
		if running, _, starts := task.counts(a.cfg.Name); running != 1 || starts != 2 {
			return fmt.Errorf("%d running, %d started", running, starts)
		}
		return nil
	})
	if _, most, _ := task.counts(a.cfg.Name); most != 1 {
		t.Errorf("%d copies of the task ran at once on %s", most, a.cfg.Name)
	}
}

// A term's readiness never replaces a later term's (a term that ended may
// still be finishing when the next starts); not ready (0) always applies.
func TestSetReadyKeepsTheLatestTerm(t *testing.T) {
	s := &Server{changed: newNotifier()}
	for _, step := range []struct{ set, want uint64 }{{5, 5}, {3, 5}, {7, 7}, {0, 0}, {3, 3}, {4, 4}} {
		s.setReady(step.set)
		if got := s.readyTerm.Load(); got != step.want {
			t.Errorf("setReady(%d): ready term %d, want %d", step.set, got, step.want)
		}
	}
}
