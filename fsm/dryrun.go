package fsm

import (
	gproto "google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
)

// DryRun answers what Apply would answer for cmd as the next log entry,
// and stores nothing. It runs the very code Apply runs (every check the
// store makes: namespace missing or terminating, a clusterIP or nodePort
// another Service holds, immutable fields, uid and resourceVersion
// preconditions) in a write transaction at AppliedIndex()+1 that it always
// aborts: no object is stored, no watch event is published, the applied
// index does not move and no waiter or watcher is woken. This is
// Kubernetes' server-side dry run: the whole write path, stopped before
// anything persists.
//
// The result is Apply's except that a dry run makes no version: Index is 0,
// and an object the command would change carries the resourceVersion it
// has in the store now (0 for one it would create), as Kubernetes' dry run
// does, so no client holds a version that never existed.
//
// It takes the writers' lock, so it is serialised with Apply for the
// microseconds a command takes. cmd is not modified. A command that panics
// is reported in Result.Err, as Apply reports it.
func (f *FSM) DryRun(cmd *pb.Command) *Result {
	if cmd == nil {
		return &Result{Err: errorf(ErrInvalid, "nil command")}
	}
	// The applier fills in and keeps parts of the command (defaults, the
	// batch's time and uid, the object it stores); the caller keeps cmd.
	cmd = gproto.Clone(cmd).(*pb.Command)

	f.wmu.Lock()
	defer f.wmu.Unlock()
	// Writers hold wmu, so applied and the store cannot change until we
	// are done: before is the state the command is checked against.
	before := f.w
	index := f.applied + 1
	txn := f.w.clone()                       // dropped when done
	log := f.cfg.Logger.With("dryRun", true) // a panic's log line names no real index
	a := &applier{kinds: f.kinds, txn: txn, index: index, log: log}
	res, _ := a.safeCommand(cmd)
	unversion(res, before, index)
	return res
}

// unversion takes out of res (and its batch) the index the dry run ran at:
// objects it made get the resourceVersion they have in before, or 0. Only
// objects carrying index were made by the dry run; stored objects (an
// "unchanged" result) have older versions and are left alone.
func unversion(res *Result, before *tables, index uint64) {
	if res == nil {
		return
	}
	res.Index = 0
	if obj := res.Object; obj != nil && obj.Meta().GetResourceVersion() == index {
		m := obj.Meta()
		m.ResourceVersion = 0
		if r := before.get(objectKey(obj.KindName(), m.GetNamespace(), m.GetName())); r != nil {
			if prev, err := r.object(); err == nil {
				m.ResourceVersion = prev.Meta().GetResourceVersion()
			}
		}
	}
	for _, r := range res.Batch {
		unversion(r, before, index)
	}
}
