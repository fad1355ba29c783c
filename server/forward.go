package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// forwardedKey marks a request a follower forwarded to the leader. A master
// that receives one but is not the leader does not forward it again (two
// masters with stale views could bounce it); it answers "not applied" and
// the forwarding master looks for the leader again.
const forwardedKey = "skiff-forwarded-by"

func isForwarded(ctx context.Context) bool {
	// ValueFromIncomingContext, unlike FromIncomingContext, does not copy
	// the whole metadata: this runs on every write.
	return len(metadata.ValueFromIncomingContext(ctx, forwardedKey)) > 0
}

// leaderInfo is where requests that need the leader go right now.
type leaderInfo struct {
	self    bool   // this master is the leader
	ready   bool   // ... and may serve (see Server.isReady)
	name    string // the leader's name, if another master leads
	apiAddr string // its API address from gossip, "" if not known yet
}

func (s *Server) leaderInfo() leaderInfo {
	if s.raft.State() == raft.Leader {
		return leaderInfo{self: true, ready: s.isReady(), name: s.cfg.Name, apiAddr: s.apiAddr}
	}
	_, id := s.raft.LeaderWithID()
	if id == "" || string(id) == s.cfg.Name {
		return leaderInfo{}
	}
	li := leaderInfo{name: string(id)}
	if m, ok := s.gossip.member(li.name); ok {
		li.apiAddr = m.APIAddr
	}
	return li
}

// routeCall runs a request that needs the leader: locally when this master is
// the ready leader, otherwise forwarded unchanged to the leader's API. While
// there is no usable leader (election in progress, new leader catching up,
// leader unreachable) it waits up to NoLeaderWait, retrying whatever failed
// in a way that guarantees nothing was applied. local and remote must return
// gRPC status errors, marking with proto.NotAppliedError what is safe to
// retry. idempotent requests (reads) are also retried after a broken
// connection; for writes that is an unknown outcome.
func routeCall[T any](s *Server, ctx context.Context, method string, idempotent bool,
	local func(context.Context) (T, error),
	remote func(context.Context, *grpc.ClientConn) (T, error),
) (T, error) {
	var zero T
	forwarded := isForwarded(ctx)
	deadline := time.Now().Add(s.cfg.NoLeaderWait)
	reason := "no leader is elected"
	for {
		wake := s.changed.wait()
		li := s.leaderInfo()
		switch {
		case li.self && li.ready:
			res, err := local(ctx)
			if err == nil || !pb.IsNotApplied(err) {
				if !forwarded {
					_ = grpc.SetHeader(ctx, s.leaderHeader)
				}
				return res, err
			}
			reason = status.Convert(err).Message()
		case li.self:
			reason = "this master was just elected and is committing its first entry"
		case forwarded:
			return zero, pb.NotAppliedError(fmt.Sprintf("master %s is not the leader (it knows of leader %q): not applied, retry", s.cfg.Name, li.name))
		case li.name != "" && li.apiAddr == "":
			reason = fmt.Sprintf("the leader %s has not published its API address in gossip yet", li.name)
		case li.name != "":
			res, err, retry := forward(s, ctx, li, method, idempotent, remote)
			if !retry {
				// Tell the client where the leader is (as the leader does
				// itself, above): its next writes can skip this hop
				// (client.Client does).
				_ = grpc.SetHeader(ctx, metadata.Pairs(pb.LeaderHeader, li.apiAddr))
				return res, err
			}
			reason = status.Convert(err).Message()
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return zero, pb.NotAppliedError(fmt.Sprintf(
				"no leader: waited %s (%s); not applied, safe to retry; if this persists the masters may have lost quorum: run `skiff cluster status`",
				s.cfg.NoLeaderWait, reason))
		}
		select {
		case <-wake:
		case <-time.After(min(remaining, 50*time.Millisecond)):
		case <-ctx.Done():
			return zero, status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			return zero, pb.NotAppliedError(fmt.Sprintf("master %s is shutting down: not applied, retry on another master", s.cfg.Name))
		}
	}
}

// forwardGrace is how long a write forwarded to a leader that has since
// lost leadership may still take to answer before it is given up as of
// unknown outcome.
const forwardGrace = time.Second

// forward sends one request to the leader. retry reports that it certainly
// did not run there.
func forward[T any](s *Server, ctx context.Context, li leaderInfo, method string, idempotent bool,
	remote func(context.Context, *grpc.ClientConn) (T, error),
) (res T, err error, retry bool) {
	conn, err := s.peers.get(li.apiAddr)
	if err != nil {
		return res, pb.NotAppliedError(err.Error()), true
	}
	// Only send once the connection is up: a failure before that means the
	// request never left, one after it may have reached the leader.
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	ok := waitConnReady(rctx, conn)
	cancel()
	if !ok {
		if ctx.Err() != nil {
			return res, status.FromContextError(ctx.Err()).Err(), false
		}
		return res, pb.NotAppliedError(fmt.Sprintf("cannot connect to the leader %s at %s", li.name, li.apiAddr)), true
	}
	s.metrics.forwarded.WithLabelValues(method).Inc()
	// If the leader changes while the request is out (the old one paused or
	// cut off), stop waiting for the old one and let routeCall find the new
	// one: at once for a read, which may be asked again anywhere; after
	// forwardGrace for a write, which the old leader may be applying (a
	// graceful handover answers within it). A write abandoned so has an
	// unknown outcome, as etcd's "request timed out, possibly due to
	// previous leader failure": without this, a write forwarded to a leader
	// cut off from the network waits until the partition heals.
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var moved atomic.Bool
	go func() {
		for {
			wake := s.changed.wait()
			if now := s.leaderInfo(); now.self || now.name != li.name {
				if !idempotent {
					select {
					case <-time.After(forwardGrace):
					case <-callCtx.Done():
						return
					}
				}
				moved.Store(true)
				cancel()
				return
			}
			select {
			case <-wake:
			case <-callCtx.Done():
				return
			}
		}
	}()
	res, err = remote(metadata.AppendToOutgoingContext(callCtx, forwardedKey, s.cfg.Name), conn)
	if err != nil && moved.Load() && ctx.Err() == nil {
		if idempotent {
			return res, pb.NotAppliedError(fmt.Sprintf("the leader changed from %s while the request was out", li.name)), true
		}
		return res, status.Errorf(codes.Unknown,
			"outcome unknown: forwarded to the leader %s, which lost leadership without answering within %s; the write may or may not have been applied: read the object to find out",
			li.name, forwardGrace), false
	}
	switch {
	case err == nil:
		return res, nil, false
	case pb.IsNotApplied(err):
		return res, err, true
	case status.Code(err) == codes.Unavailable:
		// Not from the leader's handlers (they only send Unavailable marked
		// not applied), so the connection broke while the call was out.
		if idempotent {
			return res, pb.NotAppliedError(fmt.Sprintf("leader %s at %s: %v", li.name, li.apiAddr, err)), true
		}
		return res, status.Errorf(codes.Unknown,
			"outcome unknown: forwarded to the leader %s at %s, but the connection failed after sending (%v); the write may or may not have been applied: read the object to find out",
			li.name, li.apiAddr, status.Convert(err).Message()), false
	default:
		return res, err, false
	}
}

func waitConnReady(ctx context.Context, c *grpc.ClientConn) bool {
	for {
		st := c.GetState()
		switch st {
		case connectivity.Ready:
			return true
		case connectivity.TransientFailure, connectivity.Shutdown:
			return false
		case connectivity.Idle:
			c.Connect()
		}
		if !c.WaitForStateChange(ctx, st) {
			return false
		}
	}
}

// peerPool keeps one client connection per master API address.
type peerPool struct {
	maxMsg int
	creds  credentials.TransportCredentials
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

func newPeerPool(maxMsg int, creds credentials.TransportCredentials) *peerPool {
	return &peerPool{maxMsg: maxMsg, creds: creds, conns: make(map[string]*grpc.ClientConn)}
}

func (p *peerPool) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("master is shutting down")
	}
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient("passthrough:///"+addr, append(pb.GRPCDialWindows(),
		grpc.WithTransportCredentials(p.creds),
		// Masters restart on the same address: reconnect within a second,
		// not after gRPC's default backoff of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(p.maxMsg), grpc.MaxCallSendMsgSize(p.maxMsg),
			grpc.ForceCodecV2(pb.GRPCCodec())),
	)...)
	if err != nil {
		return nil, fmt.Errorf("connect to master at %s: %w", addr, err)
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, c := range p.conns {
		_ = c.Close()
		delete(p.conns, addr)
	}
}
