package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// portForwardDialTimeout bounds connecting to a pod's port.
const portForwardDialTimeout = 10 * time.Second

// PortForward connects to a pod's TCP port and copies both ways: the
// caller's data (then the end of its sending, as a half close) to the pod, the pod's bytes back,
// until the pod's side closes (the end of the stream) or the caller goes.
// It dials 127.0.0.1 inside the pod's network namespace, as the kubelet
// does, so it needs no pod network (and reaches a port bound to loopback);
// a hostNetwork pod's port is the node's.
func (n *nodeAgentAPI) PortForward(stream grpc.BidiStreamingServer[pb.PortForwardRequest, pb.PortForwardResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return status.Error(codes.InvalidArgument, "port-forward: the first message must be start")
	}
	if p := start.GetPort(); p < 1 || p > 65535 {
		return status.Errorf(codes.InvalidArgument, "port-forward: port: must be from 1 to 65535, not %d", p)
	}
	a, err := n.s.agent(start.GetNodeName())
	if err != nil {
		return err
	}
	if a.cfg.Hollow {
		return status.Error(codes.Unimplemented, ErrUnsupported.Error())
	}
	netNS, err := a.portForwardNetNS(start)
	if err != nil {
		return err
	}
	ctx := stream.Context()
	target := fmt.Sprintf("pod %s/%s port %d", nsOrDefault(start.GetNamespace()), start.GetPod(), start.GetPort())
	dctx, cancel := context.WithTimeout(ctx, portForwardDialTimeout)
	conn, err := dialInNetNS(dctx, netNS, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(start.GetPort()))))
	timedOut := dctx.Err() != nil
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		if timedOut {
			return status.Errorf(codes.FailedPrecondition, "connect to %s: no answer within %s", target, portForwardDialTimeout)
		}
		var se *os.SyscallError
		if errors.As(err, &se) {
			err = se.Err
		}
		return status.Errorf(codes.FailedPrecondition, "connect to %s: %v", target, err)
	}
	defer conn.Close()
	go func() {
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				closeWrite(conn)
				return
			}
			if err != nil {
				conn.Close()
				return
			}
			if _, err := conn.Write(m.GetData()); err != nil {
				conn.Close()
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if err := stream.Send(&pb.PortForwardResponse{Data: append([]byte(nil), buf[:n]...)}); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return status.Errorf(codes.Aborted, "read from %s: %v", target, err)
		}
	}
}

// portForwardNetNS resolves a port-forward's pod (running on this node,
// with the UID the master resolved) to the network namespace to dial in:
// "" for a hostNetwork pod.
func (a *Agent) portForwardNetNS(start *pb.PortForwardStart) (string, error) {
	namespace := nsOrDefault(start.GetNamespace())
	w := a.pods.find(namespace, start.GetPod(), start.GetPodUid())
	if w == nil {
		return "", status.Errorf(codes.NotFound, "pod %s/%s is not running on node %s", namespace, start.GetPod(), a.cfg.Name)
	}
	p, deleted := w.snapshot()
	if phase := p.GetStatus().GetPhase(); deleted || phase != phaseRunning {
		if deleted {
			phase = "deleted"
		}
		return "", status.Errorf(codes.FailedPrecondition, "pod %s/%s is not running (%s)", namespace, start.GetPod(), phase)
	}
	if p.GetSpec().GetHostNetwork() {
		return "", nil
	}
	w.mu.Lock()
	sb := w.sandbox
	w.mu.Unlock()
	if sb == nil || sb.NetNSPath == "" {
		return "", status.Errorf(codes.FailedPrecondition, "pod %s/%s has no network namespace yet", namespace, start.GetPod())
	}
	return sb.NetNSPath, nil
}

// closeWrite ends the sending side of conn when it has one (the pod's side
// reads end of file), and closes it otherwise.
func closeWrite(conn net.Conn) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	conn.Close()
}

func nsOrDefault(namespace string) string {
	if namespace == "" {
		return "default"
	}
	return namespace
}
