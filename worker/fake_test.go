package worker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/image"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// fakeRuntime is a Runtime whose containers follow a tiny script in their
// command, so tests control exits without real processes:
//
//	["exit", "3"]             exit with 3 at once (after "after")
//	["run"]                   run until stopped (exit 143 on the stop signal)
//	["ignore-term"]           run; the stop signal is ignored, so a stop
//	                          waits for the grace period and kills (137)
//
// A "fail-start" image makes StartContainer fail.
type fakeRuntime struct {
	*HollowRuntime
	mu      sync.Mutex
	stops   []fakeStop
	starts  map[string]int // container name -> starts
	started []time.Time
	script  map[string][]string // container id -> command
	exitAt  map[string]time.Time
	exits   map[string]int
	env     map[string]string // of the last start
	begun   int               // Stop calls begun
}

type fakeStop struct {
	id    string
	grace time.Duration
	at    time.Time
	took  time.Duration
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{
		HollowRuntime: NewHollowRuntime(),
		starts:        map[string]int{}, script: map[string][]string{},
		exitAt: map[string]time.Time{}, exits: map[string]int{},
	}
}

func (f *fakeRuntime) Ensure(ctx context.Context, ref, policy string) (*image.Image, error) {
	if strings.Contains(ref, "missing") {
		return nil, fmt.Errorf("pull %s: manifest unknown", ref)
	}
	return &image.Image{Ref: ref, ID: "sha256:" + ref}, nil
}

func (f *fakeRuntime) StartContainer(ctx context.Context, sb *wrt.Sandbox, spec wrt.ContainerSpec) (string, error) {
	if strings.Contains(spec.Container.GetImage(), "fail-start") {
		return "", fmt.Errorf("start container %s: %w: no such binary", spec.Container.GetName(), wrt.ErrInvalidSpec)
	}
	id, err := f.HollowRuntime.StartContainer(ctx, sb, spec)
	if err != nil {
		return "", err
	}
	cmd := append(append([]string{}, spec.Container.GetCommand()...), spec.Container.GetArgs()...)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts[spec.Container.GetName()]++
	f.env = map[string]string{}
	for _, e := range spec.Container.GetEnv() {
		f.env[e.GetName()] = e.GetValue()
	}
	f.started = append(f.started, time.Now())
	f.script[id] = cmd
	if len(cmd) >= 2 && cmd[0] == "exit" {
		var code int
		fmt.Sscan(cmd[1], &code)
		after := time.Duration(0)
		if len(cmd) >= 4 && cmd[2] == "after" {
			after, _ = time.ParseDuration(cmd[3])
		}
		f.exitAt[id], f.exits[id] = time.Now().Add(after), code
	}
	return id, nil
}

// settle applies scripted exits that are due.
func (f *fakeRuntime) settle() {
	f.mu.Lock()
	due := map[string]int{}
	for id, at := range f.exitAt {
		if !time.Now().Before(at) {
			due[id] = f.exits[id]
			delete(f.exitAt, id)
		}
	}
	f.mu.Unlock()
	for id, code := range due {
		f.exit(id, code, 0)
	}
}

func (f *fakeRuntime) exit(id string, code, signal int) {
	h := f.HollowRuntime
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.containers[id]
	if !ok || c.State == wrt.StateExited {
		return
	}
	c.State, c.FinishedAt, c.ExitCode, c.Signal = wrt.StateExited, time.Now(), code, signal
	c.Reason = wrt.ReasonCompleted
	if code != 0 {
		c.Reason = wrt.ReasonError
	}
}

func (f *fakeRuntime) Status(id string) (wrt.ContainerStatus, error) {
	f.settle()
	return f.HollowRuntime.Status(id)
}

func (f *fakeRuntime) List() ([]wrt.ContainerStatus, error) {
	f.settle()
	return f.HollowRuntime.List()
}

func (f *fakeRuntime) ListPod(podUID string) ([]wrt.ContainerStatus, error) {
	f.settle()
	return f.HollowRuntime.ListPod(podUID)
}

func (f *fakeRuntime) Stop(ctx context.Context, id string, grace time.Duration) error {
	start := time.Now()
	f.mu.Lock()
	f.begun++
	cmd := f.script[id]
	f.mu.Unlock()
	st, err := f.HollowRuntime.Status(id)
	if err != nil || st.State == wrt.StateExited {
		return nil
	}
	if len(cmd) > 0 && cmd[0] == "ignore-term" && grace > 0 {
		t := time.NewTimer(grace)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		f.exit(id, 137, 9)
	} else if grace > 0 {
		f.exit(id, 143, 15)
	} else {
		f.exit(id, 137, 9)
	}
	f.mu.Lock()
	f.stops = append(f.stops, fakeStop{id: id, grace: grace, at: start, took: time.Since(start)})
	f.mu.Unlock()
	return nil
}

func (f *fakeRuntime) startsOf(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts[name]
}

func (f *fakeRuntime) startTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.started...)
}

func (f *fakeRuntime) stopCalls() []fakeStop {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeStop(nil), f.stops...)
}

// fakeProber answers probes from a table the test changes.
type fakeProber struct {
	mu      sync.Mutex
	results map[string]bool // "container/kind" -> ok; missing = ok
	calls   map[string]int
}

func newFakeProber() *fakeProber {
	return &fakeProber{results: map[string]bool{}, calls: map[string]int{}}
}

func (p *fakeProber) set(container string, kind probeKind, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.results[container+"/"+kind.String()] = ok
}

func (p *fakeProber) callsOf(container string, kind probeKind) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[container+"/"+kind.String()]
}

func (p *fakeProber) probe(ctx context.Context, t probeTarget, pr *pb.Probe) (bool, string) {
	kind := probeReadiness
	c := t.container
	switch pr {
	case c.GetLivenessProbe():
		kind = probeLiveness
	case c.GetStartupProbe():
		kind = probeStartup
	}
	key := c.GetName() + "/" + kind.String()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[key]++
	ok, set := p.results[key]
	if !set {
		ok = true
	}
	if !ok {
		return false, "fake probe failure"
	}
	return true, ""
}

// withFakes makes an agent run on rt with prober pr.
func withFakes(rt *fakeRuntime, pr prober) agentOptions {
	return func(c *Config) {
		c.Runtime, c.Images = rt, rt
		c.testProber = pr
	}
}

func (f *fakeRuntime) lastEnv() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.env
}

func (f *fakeRuntime) stopsBegun() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.begun
}
