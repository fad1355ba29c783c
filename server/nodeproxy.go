package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// podsProxy serves the Pods service: logs, exec, port-forward and stats of a pod (stats
// of a node too), relayed to the NodeAgent of the worker that runs it. Operators only ever reach masters;
// the master finds the worker from the store (the pod's spec.nodeName, the
// Node's InternalIP and daemon endpoint port, both kept current by the
// worker's heartbeats).
type podsProxy struct {
	pb.UnimplementedPodsServer
	s *Server
}

// route finds the worker of pod namespace/name: its NodeAgent address, the
// node's name and the pod's UID.
func (p *podsProxy) route(ctx context.Context, namespace, name string) (addr, node, uid string, err error) {
	if namespace == "" {
		namespace = "default"
	}
	if name == "" {
		return "", "", "", status.Error(codes.InvalidArgument, "pod: required")
	}
	// The pod may have been created a moment ago through another master.
	if err := p.s.linearize(ctx); err != nil {
		return "", "", "", err
	}
	obj, err := p.s.fsm.Get("Pod", namespace, name)
	if err != nil {
		return "", "", "", fsmStatus(err)
	}
	pod := obj.GetPod()
	node = pod.GetSpec().GetNodeName()
	if node == "" {
		return "", "", "", status.Errorf(codes.FailedPrecondition, "pod %s/%s is not scheduled to a node yet", namespace, name)
	}
	nobj, err := p.s.fsm.Get("Node", "", node)
	if errors.Is(err, fsm.ErrNotFound) {
		return "", "", "", pb.NodeUnreachableError(fmt.Sprintf("pod %s/%s is on node %s, which is not registered", namespace, name, node))
	}
	if err != nil {
		return "", "", "", fsmStatus(err)
	}
	addr, err = agentAddress(nobj.GetNode())
	if err != nil {
		return "", "", "", pb.NodeUnreachableError(fmt.Sprintf("pod %s/%s is on node %s: %v", namespace, name, node, err))
	}
	return addr, node, obj.Meta().GetUid(), nil
}

// agentAddress is where a node's agent listens: its InternalIP (or, without
// one, its Hostname) and the daemon endpoint port.
func agentAddress(nd *pb.Node) (string, error) {
	port := nd.GetStatus().GetDaemonEndpoints().GetKubeletEndpoint().GetPort()
	if port <= 0 {
		return "", errors.New("the node has not published its agent's port (status.daemonEndpoints)")
	}
	host := ""
	for _, t := range []string{"InternalIP", "Hostname"} {
		for _, a := range nd.GetStatus().GetAddresses() {
			if a.GetType() == t && a.GetAddress() != "" && host == "" {
				host = a.GetAddress()
			}
		}
	}
	if host == "" {
		return "", errors.New("the node has no InternalIP or Hostname address")
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port))), nil
}

func (p *podsProxy) agent(addr, node string) (pb.NodeAgentClient, error) {
	conn, err := p.s.agents.get(addr)
	if err != nil {
		return nil, pb.NodeUnreachableError(fmt.Sprintf("node %s at %s: %v", node, addr, err))
	}
	return pb.NewNodeAgentClient(conn), nil
}

// agentErr names the node in transport errors, which otherwise say nothing
// about where the relay failed. A worker that cannot be reached is a
// NodeUnreachable error, as for Stats: this master is fine, and the
// others would relay to the same worker, so the client does not try them
// (it did, for its whole retry time, before).
func agentErr(err error, node, addr string) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	st := status.Convert(err)
	if st.Code() == codes.Unavailable {
		return pb.NodeUnreachableError(fmt.Sprintf("cannot reach the worker of node %s at %s: %s", node, addr, st.Message()))
	}
	return err
}

// Logs relays a container's log stream from its worker.
func (p *podsProxy) Logs(req *pb.LogsRequest, stream grpc.ServerStreamingServer[pb.LogsResponse]) error {
	ctx := stream.Context()
	addr, node, uid, err := p.route(ctx, req.GetNamespace(), req.GetPod())
	if err != nil {
		return err
	}
	cl, err := p.agent(addr, node)
	if err != nil {
		return err
	}
	fwd := gproto.Clone(req).(*pb.LogsRequest)
	if fwd.Namespace == "" {
		fwd.Namespace = "default"
	}
	fwd.NodeName, fwd.PodUid = node, uid
	up, err := cl.Logs(ctx, fwd)
	if err != nil {
		return agentErr(err, node, addr)
	}
	for {
		m, err := up.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return agentErr(err, node, addr)
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
}

// Exec relays an exec session: the first message (start) picks the worker,
// then stdin and resizes flow up and output flows down until the worker
// sends the exit code and ends the stream.
func (p *podsProxy) Exec(stream grpc.BidiStreamingServer[pb.ExecRequest, pb.ExecResponse]) error {
	return relaySession(p, stream, "exec", (*pb.ExecRequest).GetStart, pb.NodeAgentClient.Exec,
		func(start *pb.ExecStart, node, uid string) *pb.ExecRequest {
			fwd := gproto.Clone(start).(*pb.ExecStart)
			fwd.Namespace, fwd.NodeName, fwd.PodUid = cmp.Or(fwd.Namespace, "default"), node, uid
			return &pb.ExecRequest{Msg: &pb.ExecRequest_Start{Start: fwd}}
		})
}

// sessionStart is the first message of a session relayed to a pod's worker.
type sessionStart interface {
	gproto.Message
	GetNamespace() string
	GetPod() string
}

// relaySession relays a session with a pod (exec, port-forward): the
// caller's first message holds its start (startOf), which names the pod;
// the session opens (open) on the pod's worker with that start for this
// node and pod uid (forward), and is then relayed both ways.
func relaySession[Req, Resp any, S sessionStart](p *podsProxy, down grpc.BidiStreamingServer[Req, Resp], what string,
	startOf func(*Req) S,
	open func(pb.NodeAgentClient, context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[Req, Resp], error),
	forward func(start S, node, uid string) *Req,
) error {
	ctx, cancel := context.WithCancel(down.Context())
	defer cancel()
	first, err := down.Recv()
	if err != nil {
		return err
	}
	start := startOf(first)
	if !start.ProtoReflect().IsValid() {
		return status.Errorf(codes.InvalidArgument, "%s: the first message must be start", what)
	}
	addr, node, uid, err := p.route(ctx, start.GetNamespace(), start.GetPod())
	if err != nil {
		return err
	}
	cl, err := p.agent(addr, node)
	if err != nil {
		return err
	}
	up, err := open(cl, ctx)
	if err != nil {
		return agentErr(err, node, addr)
	}
	if err := up.Send(forward(start, node, uid)); err != nil {
		// Send reports only that the stream broke; Recv says why.
		_, err = up.Recv()
		return agentErr(err, node, addr)
	}
	return relay(ctx, cancel, down, up, node, addr)
}

// relay copies a bidi stream both ways once its first message went up: the
// caller's messages to the worker until the caller's stream ends (the worker
// learns it through CloseSend; a broken caller cancels ctx), and the
// worker's back until it ends the stream.
func relay[Req, Resp any](ctx context.Context, cancel context.CancelFunc, down grpc.BidiStreamingServer[Req, Resp], up grpc.BidiStreamingClient[Req, Resp], node, addr string) error {
	go func() {
		for {
			m, err := down.Recv()
			if err != nil {
				_ = up.CloseSend()
				if !errors.Is(err, io.EOF) {
					cancel()
				}
				return
			}
			if err := up.Send(m); err != nil {
				return
			}
		}
	}()
	for {
		m, err := up.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return agentErr(err, node, addr)
		}
		if err := down.Send(m); err != nil {
			return err
		}
	}
}

// PortForward relays one forwarded connection: the first message (start)
// picks the worker, then the caller's bytes flow up and the pod's down
// until the worker ends the stream.
func (p *podsProxy) PortForward(stream grpc.BidiStreamingServer[pb.PortForwardRequest, pb.PortForwardResponse]) error {
	return relaySession(p, stream, "port-forward", (*pb.PortForwardRequest).GetStart, pb.NodeAgentClient.PortForward,
		func(start *pb.PortForwardStart, node, uid string) *pb.PortForwardRequest {
			fwd := gproto.Clone(start).(*pb.PortForwardStart)
			fwd.Namespace, fwd.NodeName, fwd.PodUid = cmp.Or(fwd.Namespace, "default"), node, uid
			return &pb.PortForwardRequest{Msg: &pb.PortForwardRequest_Start{Start: fwd}}
		})
}

// statsTimeout bounds a Stats relay: a worker that does not answer a few
// counters by then is shown as unknown (metrics-server gives a scrape 10 s).
const statsTimeout = 10 * time.Second

// Stats relays a usage report from the worker of req.NodeName, or of
// req.Pod's node. A worker that cannot be reached is a NodeUnreachable
// error: this master is fine, so the client does not try the others.
func (p *podsProxy) Stats(ctx context.Context, req *pb.StatsRequest) (*pb.StatsResponse, error) {
	fwd := gproto.Clone(req).(*pb.StatsRequest)
	var addr, node string
	var err error
	switch {
	case req.GetPod() != "":
		if fwd.Namespace == "" {
			fwd.Namespace = "default"
		}
		var uid string
		if addr, node, uid, err = p.route(ctx, fwd.Namespace, req.GetPod()); err != nil {
			return nil, err
		}
		if req.GetNodeName() != "" && req.GetNodeName() != node {
			return nil, status.Errorf(codes.NotFound, "pod %s/%s is on node %s, not %s", fwd.Namespace, req.GetPod(), node, req.GetNodeName())
		}
		fwd.NodeName, fwd.PodUid = node, uid
	case req.GetNodeName() != "":
		node = req.GetNodeName()
		if addr, err = p.nodeRoute(ctx, node); err != nil {
			return nil, err
		}
	default:
		return nil, status.Error(codes.InvalidArgument, "stats: node_name or pod: required")
	}
	cl, err := p.agent(addr, node)
	if err != nil {
		return nil, err
	}
	callCtx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	resp, err := cl.Stats(callCtx, fwd)
	if err != nil {
		if status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil {
			return nil, pb.NodeUnreachableError(fmt.Sprintf("the worker of node %s at %s did not answer within %s", node, addr, statsTimeout))
		}
		return nil, agentErr(err, node, addr)
	}
	return resp, nil
}

// nodeRoute finds the NodeAgent address of node, reading the store again
// after catching up with the leader when the node is not here (it may have
// registered a moment ago through another master).
func (p *podsProxy) nodeRoute(ctx context.Context, node string) (string, error) {
	nobj, err := p.s.fsm.Get("Node", "", node)
	if errors.Is(err, fsm.ErrNotFound) {
		if err := p.s.linearize(ctx); err != nil {
			return "", err
		}
		nobj, err = p.s.fsm.Get("Node", "", node)
	}
	if errors.Is(err, fsm.ErrNotFound) {
		return "", status.Errorf(codes.NotFound, "nodes %q not found", node)
	}
	if err != nil {
		return "", fsmStatus(err)
	}
	addr, err := agentAddress(nobj.GetNode())
	if err != nil {
		return "", pb.NodeUnreachableError(fmt.Sprintf("node %s: %v", node, err))
	}
	return addr, nil
}
