package controllers_test

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

// fakeServer serves a Fake over the gRPC API (what the masters serve).
type fakeServer struct {
	pb.UnimplementedClusterServer
	fake *controllertest.Fake
}

// List sends one object per message, so the adapter must assemble the
// chunks as it does a master's.
func (s fakeServer) List(req *pb.ListRequest, stream grpc.ServerStreamingServer[pb.ListResponse]) error {
	resp, err := s.fake.List(stream.Context(), req)
	if err != nil {
		return err
	}
	if len(resp.GetItems()) == 0 {
		return stream.Send(resp)
	}
	for _, o := range resp.GetItems() {
		if err := stream.Send(&pb.ListResponse{Items: []*pb.Object{o}, ResourceVersion: resp.GetResourceVersion()}); err != nil {
			return err
		}
	}
	return nil
}

func (s fakeServer) Create(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	o, err := s.fake.Create(ctx, req.GetObject())
	return &pb.WriteResponse{Object: o, Action: "created"}, err
}

func (s fakeServer) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.WatchEvent]) error {
	w, err := s.fake.Watch(stream.Context(), req)
	if err != nil {
		return err
	}
	defer w.Close()
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for {
		ev, err := w.Next(stream.Context())
		if err != nil {
			if controllers.IsExpired(err) {
				return status.Error(codes.OutOfRange, err.Error())
			}
			return err
		}
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
}

func TestGRPCClusterFeedsAnInformer(t *testing.T) {
	fake := controllertest.NewFake(nil, pod("a", "p1", nil, ""), pod("a", "p3", nil, ""), pod("b", "p4", nil, ""))
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	pb.RegisterClusterServer(srv, fakeServer{fake: fake})
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cluster := controllers.NewGRPCCluster(pb.NewClusterClient(conn))

	ctx, cancel := context.WithCancel(context.Background())
	f := controllers.NewInformerFactory(cluster, nil, 0)
	inf := f.For("Pod")
	f.Start(ctx)
	defer func() { cancel(); f.Wait() }()
	controllertest.Eventually(t, 5e9, inf.HasSynced, "sync over gRPC")
	if n := len(inf.List()); n != 3 {
		t.Errorf("informer holds %d pods after its list, want 3 (one list chunk each)", n)
	}

	if _, err := cluster.Create(ctx, pod("a", "p2", nil, "")); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, 5e9, func() bool { _, ok := inf.Get("a/p2"); return ok }, "the watch to deliver p2")

	// Expiry surfaces as ErrExpired and the informer lists again.
	fake.ExpireWatches()
	fake.Remove("Pod", "a", "p1")
	fake.ExpireWatches()
	controllertest.Eventually(t, 5e9, func() bool { _, ok := inf.Get("a/p1"); return !ok }, "relist after expiry")

	_, err = cluster.Watch(ctx, &pb.WatchRequest{Kind: "Pod", ResourceVersion: 1})
	if !controllers.IsExpired(err) {
		t.Errorf("watch from an expired version = %v, want expired", err)
	}
	if _, err := cluster.Create(ctx, pod("a", "p2", nil, "")); !controllers.IsAlreadyExists(err) {
		t.Errorf("second create = %v, want AlreadyExists", err)
	}
}
