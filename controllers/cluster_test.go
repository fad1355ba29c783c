package controllers_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

// batchingFake is a Fake that also takes batch writes, applying each item
// through the Fake's single write (as the server applies each nested
// command alone), and counts the batch calls.
type batchingFake struct {
	*controllertest.Fake
	mu                    sync.Mutex
	createCalls, delCalls int
	// failName makes the create of that name fail inside the batch.
	failName string
}

func (b *batchingFake) CreateBatch(ctx context.Context, objs []*pb.Object) ([]*pb.BatchResult, error) {
	b.mu.Lock()
	b.createCalls++
	fail := b.failName
	b.mu.Unlock()
	out := make([]*pb.BatchResult, len(objs))
	for i, o := range objs {
		if o.Meta().GetName() == fail {
			out[i] = &pb.BatchResult{Code: int32(codes.ResourceExhausted), Message: "quota exceeded"}
			continue
		}
		stored, err := b.Fake.Create(ctx, o)
		st := status.Convert(err)
		out[i] = &pb.BatchResult{Code: int32(st.Code()), Message: st.Message(), Object: stored}
	}
	return out, nil
}

func (b *batchingFake) DeleteBatch(ctx context.Context, ops []*pb.DeleteOp) ([]*pb.BatchResult, error) {
	b.mu.Lock()
	b.delCalls++
	b.mu.Unlock()
	out := make([]*pb.BatchResult, len(ops))
	for i, op := range ops {
		st := status.Convert(b.Fake.Delete(ctx, op))
		out[i] = &pb.BatchResult{Code: int32(st.Code()), Message: st.Message()}
	}
	return out, nil
}

func (b *batchingFake) calls() (int, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.createCalls, b.delCalls
}

func testPods(names ...string) []*pb.Object {
	out := make([]*pb.Object, len(names))
	for i, n := range names {
		out[i] = pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Namespace: "default", Name: n}})
	}
	return out
}

func TestCreateManyAndDeleteMany(t *testing.T) {
	ctx := context.Background()
	for _, batching := range []bool{true, false} {
		t.Run(fmt.Sprintf("batching=%v", batching), func(t *testing.T) {
			fake := controllertest.NewFake(nil, testPods("taken")...)
			bf := &batchingFake{Fake: fake, failName: "refused"}
			var c controllers.Cluster = fake
			if batching {
				c = bf
			}
			stored, errs := controllers.CreateMany(ctx, c, testPods("a", "taken", "b"))
			if errs[0] != nil || errs[2] != nil || stored[0].Meta().GetUid() == "" || stored[2].Meta().GetName() != "b" {
				t.Errorf("a and b: stored %v, errs %v", stored, errs)
			}
			if !controllers.IsAlreadyExists(errs[1]) || stored[1] != nil {
				t.Errorf("taken: %v, %v; want AlreadyExists", stored[1], errs[1])
			}
			derrs := controllers.DeleteMany(ctx, c, []*pb.DeleteOp{
				{Kind: "Pod", Namespace: "default", Name: "a"},
				{Kind: "Pod", Namespace: "default", Name: "missing"},
			})
			if derrs[0] != nil || !controllers.IsNotFound(derrs[1]) {
				t.Errorf("deletes = %v, want nil and NotFound", derrs)
			}
			creates, deletes := bf.calls()
			if batching && (creates != 1 || deletes != 1) {
				t.Errorf("batch calls: %d creates, %d deletes; want one each", creates, deletes)
			}
			if fake.Get("Pod", "default", "a") != nil || fake.Get("Pod", "default", "b") == nil {
				t.Error("a should be deleted and b created")
			}
		})
	}
}

// A batch the cluster refused as a whole fails every item with its error.
func TestCreateManyWholeBatchError(t *testing.T) {
	refused := status.Error(codes.Unavailable, "not applied")
	_, errs := controllers.CreateMany(context.Background(), wholeFailure{refused}, testPods("a", "b"))
	for i, err := range errs {
		if status.Code(err) != codes.Unavailable {
			t.Errorf("errs[%d] = %v, want the batch's error", i, err)
		}
	}
}

type wholeFailure struct{ err error }

func (w wholeFailure) List(context.Context, *pb.ListRequest) (*pb.ListResponse, error) {
	return nil, w.err
}
func (w wholeFailure) Watch(context.Context, *pb.WatchRequest) (controllers.Watch, error) {
	return nil, w.err
}
func (w wholeFailure) Create(context.Context, *pb.Object) (*pb.Object, error) { return nil, w.err }
func (w wholeFailure) Update(context.Context, *pb.Object) (*pb.Object, error) { return nil, w.err }
func (w wholeFailure) UpdateStatus(context.Context, *pb.Object) (*pb.Object, error) {
	return nil, w.err
}
func (w wholeFailure) Delete(context.Context, *pb.DeleteOp) error { return w.err }
func (w wholeFailure) Bind(context.Context, []*pb.BindOp) ([]*pb.BatchResult, error) {
	return nil, w.err
}
func (w wholeFailure) CreateBatch(context.Context, []*pb.Object) ([]*pb.BatchResult, error) {
	return nil, w.err
}
func (w wholeFailure) DeleteBatch(context.Context, []*pb.DeleteOp) ([]*pb.BatchResult, error) {
	return nil, w.err
}

// Under a Manager, batch writes reach a batching Cluster as one call, and
// a controller that outlives its run cannot batch-write either.
func TestManagerPassesBatchWritesThroughTheFence(t *testing.T) {
	for _, batching := range []bool{true, false} {
		t.Run(fmt.Sprintf("batching=%v", batching), func(t *testing.T) {
			fake := controllertest.NewFake(nil)
			bf := &batchingFake{Fake: fake}
			b := &blocker{name: "writer", started: make(chan struct{})}
			cfg := controllers.DefaultConfig()
			cfg.Cluster = fake
			if batching {
				cfg.Cluster = bf
			}
			cfg.Registrations = []controllers.Registration{{Name: "writer", New: func(env controllers.Env) (controllers.Controller, error) {
				b.env = env
				return b, nil
			}}}
			m, err := controllers.NewManager(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			select {
			case <-b.started:
			case <-time.After(10 * time.Second):
				t.Fatal("controller did not start")
			}
			if _, errs := controllers.CreateMany(ctx, b.env.Cluster, testPods("p1", "p2", "p3")); errs[0] != nil || errs[1] != nil || errs[2] != nil {
				t.Fatalf("CreateMany = %v", errs)
			}
			if len(fake.Objects("Pod")) != 3 {
				t.Errorf("pods = %d, want 3", len(fake.Objects("Pod")))
			}
			if creates, _ := bf.calls(); batching && creates != 1 {
				t.Errorf("batch creates = %d, want 1", creates)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			_, errs := controllers.CreateMany(context.Background(), b.env.Cluster, testPods("late"))
			if status.Code(errs[0]) != codes.Unavailable || !pb.IsNotApplied(errs[0]) {
				t.Errorf("batch create after stop = %v, want Unavailable, not applied", errs[0])
			}
			derrs := controllers.DeleteMany(context.Background(), b.env.Cluster, []*pb.DeleteOp{{Kind: "Pod", Namespace: "default", Name: "p1"}})
			if !pb.IsNotApplied(derrs[0]) {
				t.Errorf("batch delete after stop = %v, want not applied", derrs[0])
			}
		})
	}
}
