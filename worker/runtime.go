package worker

import (
	"context"
	"time"

	"github.com/skiff-sh/skiff/worker/image"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// Runtime runs pod sandboxes and containers. *runtime.Runtime (libcontainer)
// implements it, and so does the hollow runtime of hollow nodes.
//
// Contract, as package runtime documents it: every method is safe for
// concurrent use; state is keyed by pod UID (sandboxes) and container ID and
// survives the worker process when the implementation is persistent, so
// List and ListSandboxes return what an earlier process started. Containers
// carry the Labels of their ContainerSpec, by which the worker tells which
// pod container and attempt they are. Stop sends the stop signal, waits up to
// grace, then kills, and returns once the exit is recorded; Stop of an exited
// container and Remove or RemoveSandbox of an unknown one are no-ops.
// RemoveSandbox removes the pod's containers too. Errors wrap
// runtime.ErrNotFound, runtime.ErrSandboxNotFound, runtime.ErrNotRunning and
// runtime.ErrInvalidSpec where they apply.
type Runtime interface {
	CreateSandbox(ctx context.Context, podUID string, opts wrt.SandboxOptions) (*wrt.Sandbox, error)
	GetSandbox(podUID string) (*wrt.Sandbox, error)
	ListSandboxes() ([]*wrt.Sandbox, error)
	RemoveSandbox(ctx context.Context, podUID string) error
	StartContainer(ctx context.Context, sb *wrt.Sandbox, spec wrt.ContainerSpec) (string, error)
	Status(id string) (wrt.ContainerStatus, error)
	List() ([]wrt.ContainerStatus, error)
	// ListPod is List restricted to the containers of pod podUID, without
	// the cost of reading the others' state.
	ListPod(podUID string) ([]wrt.ContainerStatus, error)
	Stop(ctx context.Context, id string, grace time.Duration) error
	Remove(ctx context.Context, id string) error
	Exec(ctx context.Context, id string, cmd []string, stdio wrt.ExecIO, tty bool) (int, error)
	// LogPath is the container's current log file in the CRI format, with
	// rotated files at LogPath.1, .2, ... ("" when there are no logs).
	LogPath(id string) string
}

// Images makes images available locally. *image.Store implements it.
//
// Ensure applies a Kubernetes imagePullPolicy (Always, IfNotPresent,
// Never) and returns the image; it wraps image.ErrImageNeverPull when the
// policy forbids a needed pull.
type Images interface {
	Ensure(ctx context.Context, ref, policy string) (*image.Image, error)
	// Get returns the image ref if it is present (image.ErrNotFound if not).
	Get(ref string) (*image.Image, error)
}

// Labels the worker sets on every container so that a restarted worker can
// tell which pod container and attempt each one is.
const (
	labelPodNamespace = "skiff.sh/pod-namespace"
	labelPodName      = "skiff.sh/pod-name"
	labelContainer    = "skiff.sh/container"
	labelAttempt      = "skiff.sh/attempt"
	labelInit         = "skiff.sh/init"
)
