package client

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// Logs copies a container's log to w. The request goes to a master, which
// relays it from the pod's worker. With req.Follow it returns when the
// container exits or ctx ends (ctx's end is not an error then).
func (c *Client) Logs(ctx context.Context, req *pb.LogsRequest, w io.Writer) error {
	received := false
	err := c.do(ctx, idempotent, func(conn *grpc.ClientConn) error {
		if received {
			// Part of the log is out already; repeating it would duplicate
			// lines.
			return status.Error(codes.Aborted, "the log stream broke; run the command again")
		}
		stream, err := pb.NewPodsClient(conn).Logs(ctx, req)
		if err != nil {
			return err
		}
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				if received && status.Code(err) == codes.Unavailable {
					return status.Errorf(codes.Aborted, "the log stream broke: %v", status.Convert(err).Message())
				}
				return err
			}
			received = true
			if _, err := w.Write(m.GetData()); err != nil {
				return status.Errorf(codes.Aborted, "write: %v", err)
			}
		}
	})
	if err != nil && req.GetFollow() && ctx.Err() != nil {
		return nil
	}
	return err
}

// ExecIO is the caller's side of an exec session. A nil Stdin sends no
// input; Resize (with a TTY) delivers terminal size changes.
type ExecIO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Resize <-chan *pb.TerminalSize
}

// ErrNoExitCode is returned when an exec stream ended without the
// process's exit code.
var ErrNoExitCode = errors.New("exec: the stream ended without an exit code")

// Exec runs start's command in a container through a master and returns
// its exit code. An exec is never retried once it reached a master (the
// command may have run); connecting is.
func (c *Client) Exec(ctx context.Context, start *pb.ExecStart, stdio ExecIO) (int, error) {
	code := -1
	sent := false
	err := c.do(ctx, nonIdempotent, func(conn *grpc.ClientConn) error {
		if sent {
			return status.Error(codes.Unknown, "the exec stream broke; the command may have run")
		}
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := pb.NewPodsClient(conn).Exec(sctx)
		if err != nil {
			return err
		}
		sent = true
		if err := stream.Send(&pb.ExecRequest{Msg: &pb.ExecRequest_Start{Start: start}}); err != nil {
			_, err = stream.Recv()
			return err
		}
		go execInput(sctx, stream, stdio)
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				if code < 0 {
					return ErrNoExitCode
				}
				return nil
			}
			if err != nil {
				return err
			}
			switch msg := m.GetMsg().(type) {
			case *pb.ExecResponse_Stdout:
				if stdio.Stdout != nil {
					_, _ = stdio.Stdout.Write(msg.Stdout)
				}
			case *pb.ExecResponse_Stderr:
				if stdio.Stderr != nil {
					_, _ = stdio.Stderr.Write(msg.Stderr)
				}
			case *pb.ExecResponse_ExitCode:
				code = int(msg.ExitCode)
			}
		}
	})
	if err != nil {
		return -1, err
	}
	return code, nil
}

// execInput sends stdin (then its end) and resizes until ctx ends.
func execInput(ctx context.Context, stream grpc.BidiStreamingClient[pb.ExecRequest, pb.ExecResponse], stdio ExecIO) {
	var mu sync.Mutex
	send := func(m *pb.ExecRequest) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(m)
	}
	if stdio.Resize != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case sz, ok := <-stdio.Resize:
					if !ok {
						return
					}
					if send(&pb.ExecRequest{Msg: &pb.ExecRequest_Resize{Resize: sz}}) != nil {
						return
					}
				}
			}
		}()
	}
	if stdio.Stdin == nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := stdio.Stdin.Read(buf)
		if n > 0 {
			if send(&pb.ExecRequest{Msg: &pb.ExecRequest_Stdin{Stdin: append([]byte(nil), buf[:n]...)}}) != nil {
				return
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				_ = send(&pb.ExecRequest{Msg: &pb.ExecRequest_StdinEof{StdinEof: true}})
			}
			return
		}
	}
}

// PortForward carries one connection to port start.Port of a pod, through
// a master, on a stream of its own: what conn reads goes to the pod (its end
// of file as a half close), what the pod sends is written to conn. It
// returns when the pod's side has closed and everything it sent is written
// (nil), or when the stream breaks or ctx ends; the caller then closes conn.
// Like an exec it is never retried once a master has the stream (bytes may
// have reached the pod); connecting is.
func (c *Client) PortForward(ctx context.Context, start *pb.PortForwardStart, conn io.ReadWriter) error {
	sent := false
	return c.do(ctx, nonIdempotent, func(cc *grpc.ClientConn) error {
		if sent {
			return status.Error(codes.Unknown, "the port-forward stream broke")
		}
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := pb.NewPodsClient(cc).PortForward(sctx)
		if err != nil {
			return err
		}
		sent = true
		if err := stream.Send(&pb.PortForwardRequest{Msg: &pb.PortForwardRequest_Start{Start: start}}); err != nil {
			_, err = stream.Recv()
			return err
		}
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := conn.Read(buf)
				if n > 0 {
					if stream.Send(&pb.PortForwardRequest{Msg: &pb.PortForwardRequest_Data{Data: append([]byte(nil), buf[:n]...)}}) != nil {
						return
					}
				}
				if errors.Is(err, io.EOF) {
					_ = stream.CloseSend()
					return
				}
				if err != nil {
					cancel()
					return
				}
			}
		}()
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if _, err := conn.Write(m.GetData()); err != nil {
				return status.Errorf(codes.Canceled, "write to the local connection: %v", err)
			}
		}
	})
}

// Stats asks a master for the usage of a node and its pods (req.NodeName),
// or of one pod (req.Pod), which the master relays from the node's worker.
// A worker the master cannot reach fails at once (proto.IsNodeUnreachable)
// rather than after every master was tried: the others would relay to the
// same worker.
func (c *Client) Stats(ctx context.Context, req *pb.StatsRequest) (*pb.StatsResponse, error) {
	var out *pb.StatsResponse
	err := c.do(ctx, idempotent, func(conn *grpc.ClientConn) error {
		var err error
		out, err = pb.NewPodsClient(conn).Stats(ctx, req)
		return err
	})
	return out, err
}
