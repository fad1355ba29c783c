package proto

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// reasonNotApplied marks an Unavailable error that the server raised before
// the write reached the Raft log, so the client may retry it anywhere. Any
// other Unavailable (a broken connection) leaves a write's outcome unknown.
const reasonNotApplied = "NOT_APPLIED"

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
