package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// BenchmarkMetadataInformerSync measures what a new leader's garbage
// collector does first for a kind: list every object of it from the
// master's own store and fill its metadata cache (50,000 ConfigMaps of
// 256 bytes, as the failover benchmark leaves behind).
func BenchmarkMetadataInformerSync(b *testing.B) {
	const n = 50000
	f := storeWithConfigMaps(b, n)
	cl := localCluster{s: &Server{fsm: f}}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ctx, cancel := context.WithCancel(context.Background())
		fac := controllers.NewInformerFactory(cl, slog.New(slog.DiscardHandler), 0)
		inf := fac.ForMetadata("ConfigMap")
		fac.Start(ctx)
		if !controllers.WaitForSync(ctx, inf) || inf.Len() != n {
			b.Fatalf("synced %d objects", inf.Len())
		}
		cancel()
		fac.Wait()
	}
}

// storeWithConfigMaps returns a store holding the default namespace and n
// labelled ConfigMaps of about 256 bytes in it.
func storeWithConfigMaps(t testing.TB, n int) *fsm.FSM {
	cfg := fsm.DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	f, err := fsm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var idx uint64
	apply := func(o *pb.Object) {
		idx++
		data, err := fsm.EncodeCommand(&pb.Command{Op: &pb.Command_Create{Create: o}, Uid: fmt.Sprint("uid-", idx), Time: timestamppb.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if res := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data}).(*fsm.Result); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	apply(pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "default"}}))
	payload := strings.Repeat("x", 180)
	for i := range n {
		apply(pb.Wrap(&pb.ConfigMap{
			Metadata: &pb.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("f1-%d-%d", i%16, i), Labels: map[string]string{"g": fmt.Sprint(i / 1000)}},
			Data:     map[string]string{"v": payload},
		}))
	}
	return f
}

// The master's metadata list is its full list reduced to apiVersion, kind
// and metadata, item for item at the same resourceVersion; it stops when
// its context ends.
func TestLocalClusterListMetadata(t *testing.T) {
	const n = 3000
	cl := localCluster{s: &Server{fsm: storeWithConfigMaps(t, n)}}
	ctx := context.Background()
	req := &pb.ListRequest{Kind: "configmaps", LabelSelector: "g in (0,2)"}
	full, err := cl.List(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	raws, rv, err := cl.ListMetadata(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if rv != full.GetResourceVersion() || len(raws) != 2000 || len(raws) != len(full.GetItems()) {
		t.Fatalf("metadata list: %d items at %d, full list %d at %d", len(raws), rv, len(full.GetItems()), full.GetResourceVersion())
	}
	for i, raw := range raws {
		var got pb.Object
		if err := got.UnmarshalVT(raw); err != nil {
			t.Fatal(err)
		}
		cm := full.GetItems()[i].GetConfigMap()
		want := pb.Wrap(&pb.ConfigMap{ApiVersion: cm.GetApiVersion(), Kind: cm.GetKind(), Metadata: cm.GetMetadata()})
		if !gproto.Equal(&got, want) {
			t.Fatalf("item %d: %v, want %v", i, &got, want)
		}
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := cl.ListMetadata(cancelled, &pb.ListRequest{Kind: "ConfigMap"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("list of %d after its context ended: %v, want context.Canceled", n, err)
	}
	if _, _, err := cl.ListMetadata(ctx, &pb.ListRequest{Kind: "nosuchkind"}); status.Code(err) != codes.InvalidArgument && status.Code(err) != codes.NotFound {
		t.Fatalf("unknown kind: %v", err)
	}
}
