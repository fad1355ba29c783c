// Package client is the Go client for skiff's API. It connects to any master,
// moves to another when one is down, retries what is safe to retry, and
// reports a write whose outcome is unknown as codes.Unknown rather than as a
// failure. Used by the CLI, workers, netproxy, e2e tests and out-of-process
// controllers.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// ErrNoServers is returned when the configuration names no master.
var ErrNoServers = errors.New("no skiff server configured: pass --server, set SKIFF_SERVER, or start one with `skiff dev`")

// Config configures a Client.
type Config struct {
	// Servers are API addresses (host:port) of masters; any one will do.
	Servers []string
	// ConnectTimeout bounds how long one master may take to accept a
	// connection before the next is tried.
	ConnectTimeout time.Duration
	// RetryFor bounds how long a request that is safe to retry keeps being
	// retried across masters (for example during a leader election).
	RetryFor time.Duration
	Logger   *slog.Logger
	// TLS secures the connections (package pki builds it from the cluster
	// token); nil connects in plaintext, to masters run with --insecure.
	TLS *tls.Config
	// PerRPC adds credentials to every call (a worker's join credential).
	PerRPC credentials.PerRPCCredentials
}

// DefaultConfig returns the defaults used by the CLI.
func DefaultConfig() Config {
	return Config{ConnectTimeout: 2 * time.Second, RetryFor: 15 * time.Second, Logger: slog.New(slog.DiscardHandler)}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if len(c.Servers) == 0 {
		return ErrNoServers
	}
	for i, s := range c.Servers {
		if !strings.Contains(s, ":") {
			return fmt.Errorf("client config: Servers[%d]: %q is not host:port", i, s)
		}
	}
	if c.ConnectTimeout <= 0 {
		return errors.New("client config: ConnectTimeout must be positive")
	}
	if c.Logger == nil {
		return errors.New("client config: Logger is required")
	}
	return nil
}

// Message size limits. Masters send a List in chunks of about 1 MiB, but a
// master of an earlier version sends it as one message (a List of 10,000
// pods is about 10 MB), so receive up to the masters' own send limit;
// gRPC's default of 4 MiB would fail such a List. Requests carry one
// object (at most proto.MaxObjectBytes); the master itself refuses larger
// ones with ResourceExhausted, so the send cap only guards against a bug.
const (
	maxRecvMsgBytes = 256 << 20
	maxSendMsgBytes = 8 << 20
)

// Client talks to a skiff cluster. It is safe for concurrent use.
type Client struct {
	cfg   Config
	conns []*grpc.ClientConn

	mu      sync.Mutex
	current int // index of the master that answered last
	// leader is the index of the master believed to lead (-1: unknown).
	// Writes start there: a follower would forward them to it, a hop
	// that costs every write a request and a response more.
	leader int
}

// New connects lazily to the configured masters.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, leader: -1}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	opts := append(pb.GRPCDialWindows(),
		grpc.WithTransportCredentials(creds),
		// pb.GRPCCodec: the generated (vtprotobuf) coding of skiff's messages.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgBytes), grpc.MaxCallSendMsgSize(maxSendMsgBytes),
			grpc.ForceCodecV2(pb.GRPCCodec())),
	)
	if cfg.PerRPC != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(cfg.PerRPC))
	}
	for _, addr := range cfg.Servers {
		conn, err := grpc.NewClient(addr, opts...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("connect %s: %w", addr, err)
		}
		c.conns = append(c.conns, conn)
	}
	return c, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	for _, conn := range c.conns {
		conn.Close()
	}
	return nil
}

// retryKind says what may be retried on another master after an error.
type retryKind int

const (
	// idempotent requests (reads, Apply) are retried after any Unavailable.
	idempotent retryKind = iota
	// nonIdempotent writes are retried only when the server said the write
	// was not applied, or the connection was never established.
	nonIdempotent
)

// ready waits briefly for conn to be connected, so that a request is only
// sent on a connection known to work; a master that is down is skipped
// without any doubt about whether it received the request.
func (c *Client) ready(ctx context.Context, conn *grpc.ClientConn) bool {
	if conn.GetState() == connectivity.Ready {
		return true // the common case, without a timer for the wait below
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return true
		case connectivity.Idle:
			conn.Connect()
		case connectivity.Shutdown, connectivity.TransientFailure:
			// Down when last tried: gRPC reconnects in the background
			// (with backoff), so waiting here would only spend the
			// request's time on a master known to be down.
			return false
		}
		if !conn.WaitForStateChange(ctx, s) {
			return false
		}
		if conn.GetState() == connectivity.TransientFailure {
			return false
		}
	}
}

// do runs call against masters, starting with the last one that answered,
// until it succeeds, fails for a reason another master would not change, or
// RetryFor passes.
func (c *Client) do(ctx context.Context, kind retryKind, call func(conn *grpc.ClientConn) error) error {
	return c.run(ctx, kind, false, func(_ int, conn *grpc.ClientConn) error { return call(conn) })
}

// doWrite is do for a write: it starts at the leader when one is known,
// and learns the leader from each answer (the leader, or the master that
// forwarded the write to it, names it in pb.LeaderHeader). The header only
// moves writes among the configured masters.
func (c *Client) doWrite(ctx context.Context, kind retryKind, call func(conn *grpc.ClientConn, opts ...grpc.CallOption) error) error {
	return c.run(ctx, kind, true, func(_ int, conn *grpc.ClientConn) error {
		var md metadata.MD
		err := call(conn, grpc.Header(&md))
		if addrs := md.Get(pb.LeaderHeader); len(addrs) > 0 {
			if leader := slices.Index(c.cfg.Servers, addrs[0]); leader >= 0 {
				c.mu.Lock()
				c.leader = leader
				c.mu.Unlock()
			}
		}
		return err
	})
}

// avoid makes the next call start elsewhere than master i, which just
// failed: it may be down (a killed leader) or cut off from the others (a
// partitioned one, which holds a write until it gives up on finding a
// leader), and with a short per-request timeout every later call would
// spend its whole time there first.
func (c *Client) avoid(i int) {
	c.mu.Lock()
	if c.leader == i {
		c.leader = -1
	}
	if c.current == i {
		c.current = (i + 1) % len(c.conns)
	}
	c.mu.Unlock()
}

// failedThere reports an error that says nothing about the request itself
// but about the master or the way to it (unlike, say, AlreadyExists).
func failedThere(err error) bool {
	if pb.IsNodeUnreachable(err) {
		return false // the master answered: a worker behind it did not
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// run is do; write starts at the leader (doWrite).
func (c *Client) run(ctx context.Context, kind retryKind, write bool, call func(i int, conn *grpc.ClientConn) error) error {
	deadline := time.Now().Add(c.cfg.RetryFor)
	backoff := 50 * time.Millisecond
	c.mu.Lock()
	start := c.current
	if write && c.leader >= 0 {
		start = c.leader
	}
	c.mu.Unlock()
	var lastErr error
	for attempt := 0; ; attempt++ {
		i := (start + attempt) % len(c.conns)
		conn := c.conns[i]
		if c.ready(ctx, conn) {
			err := call(i, conn)
			if wait, ok := pb.RetryAfter(err); ok && time.Now().Add(wait).Before(deadline) {
				// Rate limited before anything was done: wait as told and
				// ask the same master again.
				if err := sleepCtx(ctx, wait); err != nil {
					return err
				}
				attempt--
				continue
			}
			if err == nil || !retryable(kind, err) {
				if failedThere(err) {
					c.avoid(i)
				} else {
					c.mu.Lock()
					c.current = i
					c.mu.Unlock()
				}
				return classify(kind, err)
			}
			lastErr = err
			c.avoid(i)
			c.cfg.Logger.Debug("retrying on another master", "server", c.cfg.Servers[i], "err", err)
		} else {
			c.avoid(i)
			// A master that speaks the other protocol (TLS or plaintext)
			// will not start to answer: say so now (transport.go).
			if err := c.checkTransport(ctx, c.cfg.Servers[i], conn); err != nil {
				return err
			}
			lastErr = status.Errorf(codes.Unavailable, "cannot connect to %s", c.cfg.Servers[i])
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no master answered within %s (tried %s): %w; check the masters with `skiff cluster status`",
				c.cfg.RetryFor, strings.Join(c.cfg.Servers, ", "), lastErr)
		}
		// Back off once a full round of masters has failed, then try
		// them all again at once: ready skips a connection in gRPC's
		// reconnect backoff (which grows to minutes), so this loop paces
		// the reconnects instead.
		if (attempt+1)%len(c.conns) == 0 {
			for _, conn := range c.conns {
				conn.ResetConnectBackoff()
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			backoff = min(backoff*2, time.Second)
		}
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func retryable(kind retryKind, err error) bool {
	if status.Code(err) != codes.Unavailable || pb.IsNodeUnreachable(err) {
		return false
	}
	return kind == idempotent || pb.IsNotApplied(err) || neverSent(err)
}

// neverSent reports a transport failure that happened before the request
// left this process: the connection could not be (re)established, or the
// server was draining and refused new streams. gRPC says so only in its
// message, so these are matched by text.
func neverSent(err error) bool {
	msg := status.Convert(err).Message()
	return strings.Contains(msg, "Error while dialing") || strings.Contains(msg, "the connection is draining")
}

// classify turns a transport failure of a non-idempotent write into Unknown:
// the request may have reached the leader.
func classify(kind retryKind, err error) error {
	if err == nil || kind != nonIdempotent || status.Code(err) != codes.Unavailable || pb.IsNotApplied(err) || neverSent(err) {
		return err
	}
	return status.Errorf(codes.Unknown, "outcome unknown: the connection broke after the request was sent (%v); read the object to see whether the change was applied", status.Convert(err).Message())
}

// Create stores a new object and returns it as stored.
func (c *Client) Create(ctx context.Context, obj *pb.Object) (*pb.WriteResponse, error) {
	return c.write(ctx, nonIdempotent, func(cl pb.ClusterClient, opts ...grpc.CallOption) (*pb.WriteResponse, error) {
		return cl.Create(ctx, &pb.WriteRequest{Object: obj}, opts...)
	})
}

// Update replaces metadata and spec; a non-zero metadata.resourceVersion is a
// precondition (codes.Aborted when stale).
func (c *Client) Update(ctx context.Context, obj *pb.Object) (*pb.WriteResponse, error) {
	return c.write(ctx, nonIdempotent, func(cl pb.ClusterClient, opts ...grpc.CallOption) (*pb.WriteResponse, error) {
		return cl.Update(ctx, &pb.WriteRequest{Object: obj}, opts...)
	})
}

// UpdateStatus replaces the status, with the same precondition rule as Update.
func (c *Client) UpdateStatus(ctx context.Context, obj *pb.Object) (*pb.WriteResponse, error) {
	return c.write(ctx, nonIdempotent, func(cl pb.ClusterClient, opts ...grpc.CallOption) (*pb.WriteResponse, error) {
		return cl.UpdateStatus(ctx, &pb.WriteRequest{Object: obj}, opts...)
	})
}

// Apply creates or updates an object (idempotent: safe to retry).
func (c *Client) Apply(ctx context.Context, obj *pb.Object, dryRun bool) (*pb.WriteResponse, error) {
	return c.write(ctx, idempotent, func(cl pb.ClusterClient, opts ...grpc.CallOption) (*pb.WriteResponse, error) {
		return cl.Apply(ctx, &pb.WriteRequest{Object: obj, DryRun: dryRun}, opts...)
	})
}

// Delete deletes an object, or starts its graceful deletion.
func (c *Client) Delete(ctx context.Context, op *pb.DeleteOp) (*pb.WriteResponse, error) {
	return c.write(ctx, nonIdempotent, func(cl pb.ClusterClient, opts ...grpc.CallOption) (*pb.WriteResponse, error) {
		return cl.Delete(ctx, &pb.DeleteRequest{Delete: op}, opts...)
	})
}

// Bind binds pods to nodes in one Raft entry; each bind succeeds or fails
// alone.
func (c *Client) Bind(ctx context.Context, binds []*pb.BindOp) ([]*pb.BatchResult, error) {
	var out []*pb.BatchResult
	err := c.doWrite(ctx, nonIdempotent, func(conn *grpc.ClientConn, opts ...grpc.CallOption) error {
		resp, err := pb.NewClusterClient(conn).Bind(ctx, &pb.BindRequest{Binds: binds}, opts...)
		if err == nil {
			out = resp.GetResults()
		}
		return err
	})
	return out, err
}

func (c *Client) write(ctx context.Context, kind retryKind, call func(pb.ClusterClient, ...grpc.CallOption) (*pb.WriteResponse, error)) (*pb.WriteResponse, error) {
	var out *pb.WriteResponse
	err := c.doWrite(ctx, kind, func(conn *grpc.ClientConn, opts ...grpc.CallOption) error {
		resp, err := call(pb.NewClusterClient(conn), opts...)
		out = resp
		return err
	})
	return out, err
}

// ReadOptions tune a read.
type ReadOptions struct {
	// Stale serves the read from whichever master answers without
	// confirming it is up to date: faster, and available without a leader.
	Stale bool
}

// Get reads one object.
func (c *Client) Get(ctx context.Context, kind, namespace, name string, opts ReadOptions) (*pb.Object, error) {
	var out *pb.Object
	err := c.do(ctx, idempotent, func(conn *grpc.ClientConn) error {
		resp, err := pb.NewClusterClient(conn).Get(ctx, &pb.GetRequest{Kind: kind, Namespace: namespace, Name: name, Stale: opts.Stale})
		out = resp.GetObject()
		return err
	})
	return out, err
}

// ListOptions select objects.
type ListOptions struct {
	Namespace     string // "" for all namespaces
	LabelSelector string
	FieldSelector string
	Stale         bool
}

// List returns matching objects and the resourceVersion to watch from. The
// master sends them in chunks of one snapshot; a stream broken part way is
// listed again from the start, on another master if need be.
func (c *Client) List(ctx context.Context, kind string, opts ListOptions) ([]*pb.Object, uint64, error) {
	var resp *pb.ListResponse
	err := c.do(ctx, idempotent, func(conn *grpc.ClientConn) error {
		var err error
		resp, err = pb.CollectList(pb.NewClusterClient(conn).List(ctx, &pb.ListRequest{
			Kind: kind, Namespace: opts.Namespace, LabelSelector: opts.LabelSelector,
			FieldSelector: opts.FieldSelector, Stale: opts.Stale,
		}))
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return resp.GetItems(), resp.GetResourceVersion(), nil
}

// Status reports the cluster's Raft state.
func (c *Client) Status(ctx context.Context) (*pb.StatusResponse, error) {
	var out *pb.StatusResponse
	err := c.do(ctx, idempotent, func(conn *grpc.ClientConn) error {
		var err error
		out, err = pb.NewOperatorClient(conn).Status(ctx, &pb.StatusRequest{})
		return err
	})
	return out, err
}

// IssueNodeCertificate asks a master to sign a node's certificate request
// (package pki) and returns the certificate's DER. A new node authenticates
// with its join credential (Config.PerRPC), a renewing node with its current
// certificate. Signing changes no cluster state, so it is retried anywhere.
func (c *Client) IssueNodeCertificate(ctx context.Context, node string, csr []byte) ([]byte, error) {
	var out []byte
	err := c.do(ctx, idempotent, func(conn *grpc.ClientConn) error {
		resp, err := pb.NewClusterClient(conn).IssueNodeCertificate(ctx, &pb.IssueNodeCertificateRequest{NodeName: node, Csr: csr})
		out = resp.GetCertificate()
		return err
	})
	return out, err
}

// TransferLeadership moves leadership to the named master, or any other if
// to is empty, and returns the new leader.
func (c *Client) TransferLeadership(ctx context.Context, to string) (string, error) {
	var out string
	err := c.do(ctx, nonIdempotent, func(conn *grpc.ClientConn) error {
		resp, err := pb.NewOperatorClient(conn).TransferLeadership(ctx, &pb.TransferLeadershipRequest{To: to})
		out = resp.GetLeader()
		return err
	})
	return out, err
}

// RemovePeer removes a master from the Raft configuration.
func (c *Client) RemovePeer(ctx context.Context, name string) error {
	return c.do(ctx, nonIdempotent, func(conn *grpc.ClientConn) error {
		_, err := pb.NewOperatorClient(conn).RemovePeer(ctx, &pb.RemovePeerRequest{Name: name})
		return err
	})
}

// SnapshotSave writes a snapshot of the cluster state to w and returns the
// number of bytes written. progress, if not nil, is called as bytes arrive.
func (c *Client) SnapshotSave(ctx context.Context, w io.Writer, progress func(n int64)) (int64, error) {
	var total int64
	err := c.do(ctx, idempotent, func(conn *grpc.ClientConn) error {
		if total > 0 {
			// Part of a snapshot was written already; a retry would corrupt it.
			return status.Error(codes.Aborted, "snapshot stream broke; run the command again")
		}
		stream, err := pb.NewOperatorClient(conn).SnapshotSave(ctx, &pb.SnapshotSaveRequest{})
		if err != nil {
			return err
		}
		for {
			chunk, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			n, err := w.Write(chunk.GetData())
			total += int64(n)
			if err != nil {
				return status.Errorf(codes.Aborted, "write snapshot: %v", err)
			}
			if progress != nil {
				progress(total)
			}
		}
	})
	return total, err
}

// SnapshotRestore replaces the whole cluster state with a snapshot read from
// r. It is meant for disaster recovery onto a fresh cluster.
func (c *Client) SnapshotRestore(ctx context.Context, r io.Reader, progress func(n int64)) (uint64, error) {
	var index uint64
	sent := false
	err := c.do(ctx, nonIdempotent, func(conn *grpc.ClientConn) error {
		if sent {
			return status.Error(codes.Aborted, "snapshot upload broke; run the command again")
		}
		sent = true
		stream, err := pb.NewOperatorClient(conn).SnapshotRestore(ctx)
		if err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		var total int64
		for {
			n, rerr := r.Read(buf)
			if n > 0 {
				if err := stream.Send(&pb.SnapshotChunk{Data: append([]byte(nil), buf[:n]...)}); err != nil {
					_, err = stream.CloseAndRecv()
					return err
				}
				total += int64(n)
				if progress != nil {
					progress(total)
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return status.Errorf(codes.Aborted, "read snapshot: %v", rerr)
			}
		}
		resp, err := stream.CloseAndRecv()
		index = resp.GetIndex()
		return err
	})
	return index, err
}
