package client

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// ErrExpired means a watch asked for history the masters no longer keep; list
// again and watch from the list's resourceVersion.
var ErrExpired = errors.New("watch expired: list again and watch from the list's resourceVersion")

// Bookmark is the event type a master sends to advance a quiet watch.
const Bookmark = "BOOKMARK"

// WatchOptions select the events of a watch.
type WatchOptions struct {
	Namespace     string
	LabelSelector string
	FieldSelector string
	// ResourceVersion: events after this index; 0 starts from now.
	ResourceVersion uint64
	// BookmarkSeconds asks masters to advance the resume point of a quiet
	// watch this often, so a resume after a failover rarely expires.
	BookmarkSeconds int32
}

// Watcher is a watch that survives the loss of the master serving it: it
// resumes on another master from the last resourceVersion it delivered, so
// every change is seen once and in order.
type Watcher struct {
	c      *Client
	kind   string
	opts   WatchOptions
	stream grpc.ServerStreamingClient[pb.WatchEvent]
	cancel context.CancelFunc

	// Several events can share one index (a batch of binds is one Raft
	// entry), so a watch that broke in the middle of them resumes from the
	// index before and skips the seenAtLast events it already delivered.
	last       uint64
	seenAtLast int
	skip       int
}

// Watch starts a watch. Call Next for events and Close when done.
func (c *Client) Watch(ctx context.Context, kind string, opts WatchOptions) (*Watcher, error) {
	w := &Watcher{c: c, kind: kind, opts: opts}
	if err := w.open(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Watcher) open(ctx context.Context) error {
	from := w.opts.ResourceVersion
	w.skip = 0
	if w.seenAtLast > 0 && w.last == from {
		from, w.skip = w.last-1, w.seenAtLast
	}
	return w.c.do(ctx, idempotent, func(conn *grpc.ClientConn) error {
		sctx, cancel := context.WithCancel(ctx)
		stream, err := pb.NewClusterClient(conn).Watch(sctx, &pb.WatchRequest{
			Kind: w.kind, Namespace: w.opts.Namespace, LabelSelector: w.opts.LabelSelector,
			FieldSelector: w.opts.FieldSelector, ResourceVersion: from,
			BookmarkSeconds: w.opts.BookmarkSeconds,
		})
		if err == nil {
			// A server-streaming call reports most errors on the first Recv;
			// header arrival tells that the master accepted the watch.
			_, err = stream.Header()
		}
		if err != nil {
			cancel()
			return mapWatchErr(err)
		}
		w.stream, w.cancel = stream, cancel
		return nil
	})
}

func mapWatchErr(err error) error {
	if status.Code(err) == codes.OutOfRange {
		return fmt.Errorf("%w (%s)", ErrExpired, status.Convert(err).Message())
	}
	return err
}

// Next returns the next ADDED, MODIFIED or DELETED event. It returns
// ErrExpired when the history needed to resume is gone, and ctx's error when
// ctx ends.
func (w *Watcher) Next(ctx context.Context) (*pb.WatchEvent, error) {
	for {
		ev, err := w.stream.Recv()
		if err == nil {
			rv := ev.GetResourceVersion()
			if ev.GetType() == Bookmark {
				// Everything up to rv has been delivered.
				if rv > w.opts.ResourceVersion {
					w.opts.ResourceVersion, w.last, w.seenAtLast = rv, rv, 0
				}
				continue
			}
			if rv < w.last || (rv == w.last && w.skip > 0) {
				if rv == w.last {
					w.skip--
				}
				continue // delivered before the stream broke
			}
			if rv == w.last {
				w.seenAtLast++
			} else {
				w.last, w.seenAtLast = rv, 1
			}
			w.opts.ResourceVersion = rv
			return ev, nil
		}
		w.cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(mapWatchErr(err), ErrExpired) {
			return nil, mapWatchErr(err)
		}
		switch status.Code(err) {
		case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated:
			return nil, err
		}
		// The stream broke (master down, shutting down): resume elsewhere.
		if err := w.open(ctx); err != nil {
			return nil, err
		}
	}
}

// ResourceVersion is the index of the last event delivered (or the starting
// point if none was).
func (w *Watcher) ResourceVersion() uint64 { return w.opts.ResourceVersion }

// Close ends the watch.
func (w *Watcher) Close() {
	if w.cancel != nil {
		w.cancel()
	}
}
