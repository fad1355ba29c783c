package worker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/image"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// HollowRuntime is the runtime of hollow nodes: containers exist only in
// memory, run from the moment they start until they are stopped (exiting
// with 0 on the stop signal, 137 on a kill) and need no image. It
// implements Runtime and Images. Logs and exec are not supported.
type HollowRuntime struct {
	mu         sync.Mutex
	sandboxes  map[string]*wrt.Sandbox
	containers map[string]*wrt.ContainerStatus
}

// NewHollowRuntime returns an empty hollow runtime.
func NewHollowRuntime() *HollowRuntime {
	return &HollowRuntime{sandboxes: map[string]*wrt.Sandbox{}, containers: map[string]*wrt.ContainerStatus{}}
}

// Ensure returns a placeholder image at once.
func (h *HollowRuntime) Ensure(ctx context.Context, ref, policy string) (*image.Image, error) {
	return &image.Image{Ref: ref, ID: ref}, nil
}

// Get returns a placeholder image: every image is present.
func (h *HollowRuntime) Get(ref string) (*image.Image, error) {
	return &image.Image{Ref: ref, ID: ref}, nil
}

func (h *HollowRuntime) CreateSandbox(ctx context.Context, podUID string, opts wrt.SandboxOptions) (*wrt.Sandbox, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sb, ok := h.sandboxes[podUID]; ok {
		return sb, nil
	}
	sb := &wrt.Sandbox{PodUID: podUID, HostNetwork: opts.HostNetwork, Hostname: opts.Hostname, CreatedAt: time.Now()}
	h.sandboxes[podUID] = sb
	return sb, nil
}

func (h *HollowRuntime) GetSandbox(podUID string) (*wrt.Sandbox, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sb, ok := h.sandboxes[podUID]; ok {
		return sb, nil
	}
	return nil, fmt.Errorf("sandbox %s: %w", podUID, wrt.ErrSandboxNotFound)
}

func (h *HollowRuntime) ListSandboxes() ([]*wrt.Sandbox, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*wrt.Sandbox, 0, len(h.sandboxes))
	for _, sb := range h.sandboxes {
		out = append(out, sb)
	}
	return out, nil
}

func (h *HollowRuntime) RemoveSandbox(ctx context.Context, podUID string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, c := range h.containers {
		if c.PodUID == podUID {
			delete(h.containers, id)
		}
	}
	delete(h.sandboxes, podUID)
	return nil
}

func (h *HollowRuntime) StartContainer(ctx context.Context, sb *wrt.Sandbox, spec wrt.ContainerSpec) (string, error) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	now := time.Now()
	st := &wrt.ContainerStatus{
		ID: id, PodUID: sb.PodUID, Name: spec.Container.GetName(), Labels: spec.Labels,
		Image: spec.Container.GetImage(), State: wrt.StateRunning, CreatedAt: now, StartedAt: now,
	}
	if spec.Image != nil {
		st.ImageID = spec.Image.ID
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.sandboxes[sb.PodUID]; !ok {
		return "", fmt.Errorf("start container: sandbox %s: %w", sb.PodUID, wrt.ErrSandboxNotFound)
	}
	h.containers[id] = st
	return id, nil
}

func (h *HollowRuntime) Status(id string) (wrt.ContainerStatus, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.containers[id]
	if !ok {
		return wrt.ContainerStatus{}, fmt.Errorf("container %s: %w", id, wrt.ErrNotFound)
	}
	return *c, nil
}

func (h *HollowRuntime) List() ([]wrt.ContainerStatus, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]wrt.ContainerStatus, 0, len(h.containers))
	for _, c := range h.containers {
		out = append(out, *c)
	}
	return out, nil
}

func (h *HollowRuntime) ListPod(podUID string) ([]wrt.ContainerStatus, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []wrt.ContainerStatus
	for _, c := range h.containers {
		if c.PodUID == podUID {
			out = append(out, *c)
		}
	}
	return out, nil
}

func (h *HollowRuntime) Stop(ctx context.Context, id string, grace time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.containers[id]
	if !ok || c.State == wrt.StateExited {
		return nil
	}
	c.State, c.FinishedAt, c.Reason = wrt.StateExited, time.Now(), wrt.ReasonCompleted
	if grace <= 0 {
		c.ExitCode, c.Signal, c.Reason = 137, 9, wrt.ReasonError
	}
	return nil
}

func (h *HollowRuntime) Remove(ctx context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.containers, id)
	return nil
}

func (h *HollowRuntime) Exec(ctx context.Context, id string, cmd []string, stdio wrt.ExecIO, tty bool) (int, error) {
	return -1, ErrUnsupported
}

func (h *HollowRuntime) LogPath(id string) string { return "" }

// hollowProber passes every probe.
type hollowProber struct{}

func (hollowProber) probe(context.Context, probeTarget, *pb.Probe) (bool, string) { return true, "" }

// RunHollow runs count hollow nodes in this process until ctx ends. They
// are named cfg.Name-0001, -0002, ...; each is a full gossip member with its
// own memberlist (with longer probe and gossip intervals than a real
// worker), registration, heartbeats and pod workers, but they share one
// NodeAgent listener (cfg.ListenAddr). Joins are spread out so the masters
// see a steady trickle, not a storm.
//
// With cfg.TokenFile each node gets a key and a certificate of its own
// (CN system:node:NAME, asked for with the join credential, at most
// hollowIssueConcurrency at once) and its own connections to the masters,
// so each makes its API calls as itself; gossip is encrypted with the
// cluster's key. The shared NodeAgent serves one of their certificates.
// With cfg.Insecure they share one plaintext connection to the masters.
func RunHollow(ctx context.Context, cfg Config, count int) error {
	if count < 1 {
		return fmt.Errorf("worker config: hollow count %d: must be at least 1", count)
	}
	cfg.Hollow = true
	if err := cfg.Validate(); err != nil {
		return err
	}
	var api *masterSet
	var ht *hollowTLS
	var serverTLS *tls.Config
	if cfg.Insecure {
		cfg.Logger.Warn("INSECURE: hollow nodes talk to the masters in plaintext; only for local experiments and scale tests")
		api = newMasterSet(cfg.Logger.With("component", "api"), nil)
		defer api.close()
	} else {
		var err error
		if ht, err = newHollowTLS(cfg.TokenFile, cfg.Logger.With("component", "api")); err != nil {
			return err
		}
		defer ht.close()
		serverTLS = ht.serverConfig()
	}
	srv, err := NewServer(cfg.ListenAddr, cfg.Logger, serverTLS)
	if err != nil {
		return err
	}
	defer srv.Stop()
	go func() { _ = srv.Serve() }()

	agents := make([]*Agent, 0, count)
	for i := 1; i <= count; i++ {
		c := cfg
		c.Name = fmt.Sprintf("%s-%04d", cfg.Name, i)
		c.Server, c.api, c.hollowTLS = srv, api, ht
		c.Runtime, c.Images = nil, nil
		a, err := New(c)
		if err != nil {
			for _, a := range agents {
				a.closeAll()
			}
			return fmt.Errorf("hollow node %s: %w", c.Name, err)
		}
		agents = append(agents, a)
	}
	cfg.Logger.Info("starting hollow nodes", "count", count, "agent", srv.Addr())
	var wg sync.WaitGroup
	errs := make(chan error, count)
	for i, a := range agents {
		if i > 0 && !sleep(ctx, 10*time.Millisecond) {
			for _, a := range agents[i:] {
				a.closeAll()
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil {
				errs <- fmt.Errorf("hollow node %s: %w", a.Name(), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
