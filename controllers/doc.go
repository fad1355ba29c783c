// Package controllers is skiff's controller framework: the small Cluster
// interface controllers use to reach the store, shared informers (list+watch
// into an indexed local cache), rate-limited work queues of keys, the
// Reconciler loop, an Event recorder, per-controller metrics, and the
// Manager that the Raft leader runs (see server.LeaderTask).
//
// Built-in controllers live in sub-packages (scheduler, replicaset,
// deployment, ...), each exporting a Registration; package builtin lists
// them. This package imports none of them, so a new controller is one new
// sub-package plus one line in builtin.
//
// The rules every controller follows (docs/controllers.md explains them):
//
//   - Read from the informer cache, never from the Cluster in a reconcile.
//     Cached objects are shared: Clone before changing one.
//   - Write through the Cluster with resourceVersion preconditions, so a
//     decision taken on a stale cache fails (codes.Aborted) and is retried
//     instead of being applied.
//   - Queue keys ("namespace/name"), never event payloads: a reconcile reads
//     the current state, so it is level-triggered and idempotent.
//   - Retries and backoff belong to the queue: a reconcile that fails just
//     returns its error.
package controllers
