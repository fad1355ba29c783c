package proto

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// LeaderHeader is the response header in which the leader, and a master
// that forwarded a write to it, name the leader's API address (as the
// leader publishes it), so that a client can send its next writes there
// directly.
const LeaderHeader = "skiff-leader-api"

// reasonNotApplied marks an Unavailable error that the server raised before
// the write reached the Raft log, so the client may retry it anywhere. Any
// other Unavailable (a broken connection) leaves a write's outcome unknown.
const reasonNotApplied = "NOT_APPLIED"

// reasonNodeUnreachable marks an Unavailable error of a master that
// answered but could not reach the worker it relays to: the master is
// fine, so the client neither retries elsewhere nor avoids it.
const reasonNodeUnreachable = "NODE_UNREACHABLE"

// NodeUnreachableError returns an Unavailable status saying a master could
// not reach a node's worker.
func NodeUnreachableError(msg string) error {
	st := status.New(codes.Unavailable, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reasonNodeUnreachable, Domain: "skiff"}); err == nil {
		st = d
	}
	return st.Err()
}

// IsNodeUnreachable reports whether err is a NodeUnreachableError.
func IsNodeUnreachable(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Reason == reasonNodeUnreachable {
			return true
		}
	}
	return false
}

// NotAppliedError returns an Unavailable status saying the request was not
// applied and is safe to retry.
func NotAppliedError(msg string) error {
	st := status.New(codes.Unavailable, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reasonNotApplied, Domain: "skiff"}); err == nil {
		st = d
	}
	return st.Err()
}

// IsNotApplied reports whether err is a NotAppliedError.
func IsNotApplied(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Reason == reasonNotApplied {
			return true
		}
	}
	return false
}

// RateLimitedError returns a ResourceExhausted status for a request refused
// by a rate limit before it did anything, carrying how long to wait
// (RetryInfo, gRPC's counterpart of HTTP 429's Retry-After), so clients
// slow down and retry instead of failing.
func RateLimitedError(msg string, retryAfter time.Duration) error {
	st := status.New(codes.ResourceExhausted, msg)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)}); err == nil {
		st = d
	}
	return st.Err()
}

// RetryAfter returns the delay of a RateLimitedError; ok is false for any
// other error.
func RetryAfter(err error) (d time.Duration, ok bool) {
	st, isStatus := status.FromError(err)
	if !isStatus || st.Code() != codes.ResourceExhausted {
		return 0, false
	}
	for _, det := range st.Details() {
		if ri, isRetry := det.(*errdetails.RetryInfo); isRetry {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}
