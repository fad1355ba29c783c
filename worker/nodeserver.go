package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// Server serves the NodeAgent gRPC service for the agents of one process
// (one real worker, or many hollow ones), routing each request by node
// name. Masters call it to register the node (Info) and to relay logs,
// exec and stats.
type Server struct {
	log  *slog.Logger
	ln   net.Listener
	grpc *grpc.Server

	mu     sync.Mutex
	agents map[string]*Agent
}

// NewServer listens on addr (host:port; port 0 picks one). With tlsConfig
// it serves TLS (masters only, see tls.go); nil serves plaintext.
func NewServer(addr string, log *slog.Logger, tlsConfig *tls.Config) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the node agent on %s: %w", addr, err)
	}
	s := &Server{log: log, ln: ln, agents: map[string]*Agent{}}
	opts := pb.GRPCServerWindows()
	if tlsConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	s.grpc = grpc.NewServer(append(opts,
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.ForceServerCodecV2(pb.GRPCCodec()),
	)...)
	pb.RegisterNodeAgentServer(s.grpc, &nodeAgentAPI{s: s})
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Stop.
func (s *Server) Serve() error {
	err := s.grpc.Serve(s.ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop ends every call and closes the listener.
func (s *Server) Stop() { s.grpc.Stop() }

func (s *Server) add(a *Agent) {
	s.mu.Lock()
	s.agents[a.cfg.Name] = a
	s.mu.Unlock()
}

func (s *Server) remove(a *Agent) {
	s.mu.Lock()
	if s.agents[a.cfg.Name] == a {
		delete(s.agents, a.cfg.Name)
	}
	s.mu.Unlock()
}

// agent finds the agent a request is for: by name, or the only one.
func (s *Server) agent(name string) (*Agent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "" && len(s.agents) == 1 {
		for _, a := range s.agents {
			return a, nil
		}
	}
	if a, ok := s.agents[name]; ok {
		return a, nil
	}
	return nil, status.Errorf(codes.NotFound, "node %q is not served here", name)
}

type nodeAgentAPI struct {
	pb.UnimplementedNodeAgentServer
	s *Server
}

func (n *nodeAgentAPI) Info(ctx context.Context, req *pb.NodeInfoRequest) (*pb.NodeInfoResponse, error) {
	a, err := n.s.agent(req.GetNodeName())
	if err != nil {
		return nil, err
	}
	return &pb.NodeInfoResponse{Node: a.desc.node(time.Now())}, nil
}

// container resolves a request's pod and container to the worker and the
// container's state; previous selects the instance before the current one.
func (a *Agent) container(namespace, pod, uid, container string, previous bool) (w *podWorker, id string, err error) {
	if namespace == "" {
		namespace = "default"
	}
	w = a.pods.find(namespace, pod, uid)
	if w == nil {
		return nil, "", status.Errorf(codes.NotFound, "pod %s/%s is not running on node %s", namespace, pod, a.cfg.Name)
	}
	p, _ := w.snapshot()
	names := []string{}
	for _, c := range allContainers(p) {
		names = append(names, c.GetName())
	}
	if container == "" {
		if len(p.GetSpec().GetContainers()) != 1 {
			return nil, "", status.Errorf(codes.InvalidArgument, "a container name must be specified for pod %s, choose one of: [%s]", pod, strings.Join(names, " "))
		}
		container = p.GetSpec().GetContainers()[0].GetName()
	}
	w.mu.Lock()
	cs := w.ctrs[container]
	var in *ctrInstance
	if cs != nil {
		in = cs.cur
		if previous {
			in = cs.prev
			if cs.cur != nil && cs.cur.st.State == wrt.StateExited && cs.waitReason != "" {
				// Crash-looping: the current instance is the last one that ran.
				in = cs.cur
			}
		}
	}
	w.mu.Unlock()
	sort.Strings(names)
	switch {
	case !contains(names, container):
		return nil, "", status.Errorf(codes.NotFound, "container %s is not valid for pod %s", container, pod)
	case in == nil && previous:
		return nil, "", status.Errorf(codes.FailedPrecondition, "previous terminated container %q in pod %q not found", container, pod)
	case in == nil:
		return nil, "", status.Errorf(codes.FailedPrecondition, "container %q in pod %q is waiting to start", container, pod)
	}
	return w, in.id, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (n *nodeAgentAPI) Logs(req *pb.LogsRequest, stream grpc.ServerStreamingServer[pb.LogsResponse]) error {
	a, err := n.s.agent(req.GetNodeName())
	if err != nil {
		return err
	}
	if a.cfg.Hollow {
		return status.Error(codes.Unimplemented, ErrUnsupported.Error())
	}
	if req.LimitBytes != nil && req.GetLimitBytes() <= 0 {
		return status.Errorf(codes.InvalidArgument, "limit_bytes: must be greater than 0, not %d", req.GetLimitBytes())
	}
	_, id, err := a.container(req.GetNamespace(), req.GetPod(), req.GetPodUid(), req.GetContainer(), req.GetPrevious())
	if err != nil {
		return err
	}
	path := a.rt.LogPath(id)
	if path == "" {
		return status.Error(codes.Unimplemented, "this runtime keeps no logs")
	}
	opts := logOptions{follow: req.GetFollow() && !req.GetPrevious(), tail: -1, timestamps: req.GetTimestamps(), limitBytes: req.GetLimitBytes()}
	if req.TailLines != nil {
		opts.tail = max(req.GetTailLines(), 0)
	}
	if req.SinceUnixNano != nil {
		opts.since = time.Unix(0, req.GetSinceUnixNano())
	}
	running := func() bool {
		st, err := a.rt.Status(id)
		return err == nil && st.State != wrt.StateExited
	}
	return streamLog(stream.Context(), path, opts, running, func(b []byte) error {
		return stream.Send(&pb.LogsResponse{Data: b})
	})
}

// Exec runs a command in a container: the first message starts it, later
// ones carry stdin, its end and terminal resizes; output flows back, and the
// exit code ends the stream.
func (n *nodeAgentAPI) Exec(stream grpc.BidiStreamingServer[pb.ExecRequest, pb.ExecResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return status.Error(codes.InvalidArgument, "exec: the first message must be start")
	}
	if len(start.GetCommand()) == 0 {
		return status.Error(codes.InvalidArgument, "exec: command: required")
	}
	a, err := n.s.agent(start.GetNodeName())
	if err != nil {
		return err
	}
	if a.cfg.Hollow {
		return status.Error(codes.Unimplemented, ErrUnsupported.Error())
	}
	_, id, err := a.container(start.GetNamespace(), start.GetPod(), start.GetPodUid(), start.GetContainer(), false)
	if err != nil {
		return err
	}
	ctx := stream.Context()

	var sendMu sync.Mutex
	send := func(m *pb.ExecResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	stdout := writerFunc(func(p []byte) (int, error) {
		return len(p), send(&pb.ExecResponse{Msg: &pb.ExecResponse_Stdout{Stdout: append([]byte(nil), p...)}})
	})
	stderr := writerFunc(func(p []byte) (int, error) {
		return len(p), send(&pb.ExecResponse{Msg: &pb.ExecResponse_Stderr{Stderr: append([]byte(nil), p...)}})
	})
	var stdinR *io.PipeReader
	var stdinW *io.PipeWriter
	if start.GetStdin() {
		stdinR, stdinW = io.Pipe()
	}
	resize := make(chan wrt.TerminalSize, 4)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			m, err := stream.Recv()
			if err != nil {
				if stdinW != nil {
					stdinW.Close()
				}
				return
			}
			switch {
			case m.GetStdin() != nil && stdinW != nil:
				if _, err := stdinW.Write(m.GetStdin()); err != nil {
					return
				}
			case m.GetStdinEof():
				if stdinW != nil {
					stdinW.Close()
				}
			case m.GetResize() != nil:
				sz := wrt.TerminalSize{Width: uint16(m.GetResize().GetWidth()), Height: uint16(m.GetResize().GetHeight())}
				select {
				case resize <- sz:
				default:
				}
			}
		}
	}()
	stdio := wrt.ExecIO{Stdout: stdout, Stderr: stderr, Resize: resize}
	if stdinR != nil {
		stdio.Stdin = stdinR
	}
	if sz := start.GetSize(); sz != nil {
		stdio.Size = wrt.TerminalSize{Width: uint16(sz.GetWidth()), Height: uint16(sz.GetHeight())}
	}
	code, err := a.rt.Exec(ctx, id, start.GetCommand(), stdio, start.GetTty())
	if stdinR != nil {
		stdinR.Close()
	}
	if err != nil {
		if errors.Is(err, wrt.ErrNotRunning) {
			return status.Errorf(codes.FailedPrecondition, "container is not running: %v", err)
		}
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.Unknown, "exec: %v", err)
	}
	return send(&pb.ExecResponse{Msg: &pb.ExecResponse_ExitCode{ExitCode: int32(code)}})
}

// Stats reports the node's usage and its pods' (stats.go).
func (n *nodeAgentAPI) Stats(ctx context.Context, req *pb.StatsRequest) (*pb.StatsResponse, error) {
	a, err := n.s.agent(req.GetNodeName())
	if err != nil {
		return nil, err
	}
	return a.stats(req)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
