package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// env owns every process and directory the benchmarks create, so that all
// of them are removed on exit, on an error and on Ctrl-C.
type env struct {
	root string // a temporary directory holding every data dir and log
	keep bool   // keep root (for debugging with -keep)

	mu    sync.Mutex
	procs []*proc
	ports map[int]bool
}

func newEnv(keep bool) (*env, error) {
	root, err := os.MkdirTemp("", "skiffbench-")
	if err != nil {
		return nil, err
	}
	return &env{root: root, keep: keep, ports: map[int]bool{}}, nil
}

// cleanup kills every process still running and removes the data dirs.
func (e *env) cleanup() {
	e.mu.Lock()
	procs := append([]*proc(nil), e.procs...)
	e.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	if e.keep {
		fmt.Fprintf(os.Stderr, "kept %s\n", e.root)
		return
	}
	os.RemoveAll(e.root)
}

// freePort returns a port free for TCP and UDP on 127.0.0.1 (gossip uses
// both) that this run has not handed out before.
func (e *env) freePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		e.mu.Lock()
		used := e.ports[port]
		e.ports[port] = true
		e.mu.Unlock()
		if !used {
			return port, nil
		}
	}
	return 0, errors.New("no free port on 127.0.0.1")
}

func (e *env) addr() (string, error) {
	p, err := e.freePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p), nil
}

// proc is a child process that can be killed and started again with the
// same arguments (a master or an etcd member).
type proc struct {
	name    string
	bin     string
	args    []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (e *env) newProc(name, bin string, args []string, logPath string) *proc {
	p := &proc{name: name, bin: bin, args: args, logPath: logPath}
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, and killed with us even if we are SIGKILLed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// kill SIGKILLs the process (if running) and waits for it to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// pid returns the process id, or 0 when not running.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
	}
	return p.cmd.Process.Pid
}

// exited reports whether the process was started and has ended by itself.
func (p *proc) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the last n lines of the process log.
func (p *proc) logTail(n int) string {
	data, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// memKB reads VmRSS and VmHWM (peak RSS) of a process in KiB.
func memKB(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm, nil
}

// poll calls f every interval until it returns nil, within passes or ctx
// ends.
func poll(ctx context.Context, within, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", within, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// selfCPU is the CPU this process (the benchmark's clients) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter measures the CPU a set of server processes and this process
// use over an interval.
type cpuMeter struct {
	pids   []int
	server []time.Duration
	self   time.Duration
}

func startCPU(pids []int) *cpuMeter {
	m := &cpuMeter{pids: pids, self: selfCPU()}
	for _, p := range pids {
		t, _ := cpuTime(p)
		m.server = append(m.server, t)
	}
	return m
}

// stop returns the CPU each server process and this process used since
// startCPU; a process that exited counts as zero.
func (m *cpuMeter) stop() (servers []time.Duration, self time.Duration) {
	for i, p := range m.pids {
		t, err := cpuTime(p)
		if err != nil || t < m.server[i] {
			servers = append(servers, 0)
			continue
		}
		servers = append(servers, t-m.server[i])
	}
	return servers, selfCPU() - m.self
}
