package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// TestPodSessionsStart: an exec or port-forward session must open with its
// start message, and one for a pod that does not exist ends NotFound before
// any worker is asked.
func TestPodSessionsStart(t *testing.T) {
	t.Parallel()
	ts := startServer(t, singleConfig(t))
	waitLeader(t, []*testServer{ts})
	pods := pb.NewPodsClient(ts.conn)

	check := func(t *testing.T, what string, err error, want codes.Code, says string) {
		t.Helper()
		if status.Code(err) != want || !strings.Contains(status.Convert(err).Message(), says) {
			t.Fatalf("%s: got %v, want %v saying %q", what, err, want, says)
		}
	}
	t.Run("exec", func(t *testing.T) {
		ctx := ctxT(t, 10*time.Second)
		s, err := pods.Exec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&pb.ExecRequest{Msg: &pb.ExecRequest_Stdin{Stdin: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		check(t, "stdin first", err, codes.InvalidArgument, "exec: the first message must be start")

		s, err = pods.Exec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&pb.ExecRequest{Msg: &pb.ExecRequest_Start{Start: &pb.ExecStart{Pod: "nope", Command: []string{"true"}}}}); err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		check(t, "missing pod", err, codes.NotFound, "nope")
	})
	t.Run("port-forward", func(t *testing.T) {
		ctx := ctxT(t, 10*time.Second)
		s, err := pods.PortForward(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&pb.PortForwardRequest{Msg: &pb.PortForwardRequest_Data{Data: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		check(t, "data first", err, codes.InvalidArgument, "port-forward: the first message must be start")

		s, err = pods.PortForward(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&pb.PortForwardRequest{Msg: &pb.PortForwardRequest_Start{Start: &pb.PortForwardStart{Namespace: "default", Pod: "nope", Port: 80}}}); err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		check(t, "missing pod", err, codes.NotFound, "nope")
	})
}
