//go:build !linux

package runtime

import (
	"context"
	"time"
)

// Runtime is only implemented on Linux; elsewhere every method returns
// ErrUnsupported.
type Runtime struct{}

// New returns ErrUnsupported.
func New(cfg Config) (*Runtime, error) { return nil, ErrUnsupported }

func (r *Runtime) LogPath(id string) string { return "" }

func (r *Runtime) CreateSandbox(ctx context.Context, podUID string, opts SandboxOptions) (*Sandbox, error) {
	return nil, ErrUnsupported
}

func (r *Runtime) GetSandbox(podUID string) (*Sandbox, error) { return nil, ErrUnsupported }

func (r *Runtime) ListSandboxes() ([]*Sandbox, error) { return nil, ErrUnsupported }

func (r *Runtime) RemoveSandbox(ctx context.Context, podUID string) error { return ErrUnsupported }

func (r *Runtime) StartContainer(ctx context.Context, sb *Sandbox, spec ContainerSpec) (string, error) {
	return "", ErrUnsupported
}

func (r *Runtime) Status(id string) (ContainerStatus, error) {
	return ContainerStatus{}, ErrUnsupported
}

func (r *Runtime) List() ([]ContainerStatus, error) { return nil, ErrUnsupported }

func (r *Runtime) ListPod(podUID string) ([]ContainerStatus, error) { return nil, ErrUnsupported }

func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	return ErrUnsupported
}

func (r *Runtime) Remove(ctx context.Context, id string) error { return ErrUnsupported }

func (r *Runtime) Exec(ctx context.Context, id string, cmd []string, stdio ExecIO, tty bool) (int, error) {
	return -1, ErrUnsupported
}

func (r *Runtime) ContainerUsage(id string, withMemory bool) (Usage, error) {
	return Usage{}, ErrUnsupported
}

func (r *Runtime) NodeUsage(withMemory bool) (Usage, error) { return Usage{}, ErrUnsupported }
