package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/sys/capability"
	"github.com/moby/sys/devices"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// The paths Docker and containerd hide from, or make read-only in, every
// unprivileged container.
var (
	wantMasked   = []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
	wantReadonly = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// configFor builds the libcontainer config StartContainer would for c.
func configFor(t *testing.T, c *pb.Container, sec *Security) *configs.Config {
	t.Helper()
	caps, err := resolveCapabilities(c.GetSecurityContext(), allCapabilities())
	if err != nil {
		t.Fatal(err)
	}
	r := &Runtime{log: quietLogger()}
	sb := &Sandbox{PodUID: "p", IPCNSPath: "/x/ipc", NetNSPath: "/x/net", UTSNSPath: "/x/uts", ShmPath: "/x/shm", CgroupPath: "/skiff/p"}
	cfg, sd := r.containerConfig("c1", sb, "/x/rootfs", ContainerSpec{Container: c, Security: sec}, resources{}, caps)
	if cfg.Seccomp != nil {
		t.Fatal("the worker's config holds a seccomp filter: the shim builds it")
	}
	if sd != nil {
		// As the shim does before it creates the container.
		if cfg.Seccomp, err = sd.Config(); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

// seccompConfig is the filter a container with profile and caps runs with:
// what the worker asks for, as the shim builds it.
func seccompConfig(profile SeccompProfile, caps []string, noX32 bool) (*configs.Seccomp, error) {
	sd := seccompFor(profile, caps, noX32, quietLogger())
	if sd == nil {
		return nil, nil
	}
	return sd.Config()
}

func mountAt(cfg *configs.Config, dest string) *configs.Mount {
	for _, m := range cfg.Mounts {
		if m.Destination == dest {
			return m
		}
	}
	return nil
}

// allowed reports whether the seccomp filter lets name through
// unconditionally.
func allowed(s *configs.Seccomp, name string) bool {
	for _, sc := range s.Syscalls {
		if sc.Name == name && sc.Action == configs.Allow && len(sc.Args) == 0 {
			return true
		}
	}
	return false
}

func TestSecurityConfigDefaults(t *testing.T) {
	cfg := configFor(t, &pb.Container{Name: "c"}, nil)
	want := sortedCopy(slices.DeleteFunc(slices.Clone(defaultCapabilities), func(c string) bool { return !slices.Contains(allCapabilities(), c) }))
	if len(want) != 14 {
		t.Logf("the worker lacks some default capabilities: has %q", want)
	}
	caps := cfg.Capabilities
	for name, got := range map[string][]string{"bounding": caps.Bounding, "effective": caps.Effective, "permitted": caps.Permitted} {
		if !slices.Equal(sortedCopy(got), want) {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if len(caps.Ambient) != 0 || len(caps.Inheritable) != 0 {
		t.Errorf("ambient %q inheritable %q, want none", caps.Ambient, caps.Inheritable)
	}
	if !cfg.NoNewPrivileges {
		t.Error("no_new_privs is off by default")
	}
	if cfg.Readonlyfs {
		t.Error("rootfs is read-only without readOnlyRootFilesystem")
	}
	for _, p := range wantMasked {
		if !slices.Contains(cfg.MaskPaths, p) {
			t.Errorf("%s not masked: %q", p, cfg.MaskPaths)
		}
	}
	for _, p := range wantReadonly {
		if !slices.Contains(cfg.ReadonlyPaths, p) {
			t.Errorf("%s not read-only: %q", p, cfg.ReadonlyPaths)
		}
	}
	for _, dest := range []string{"/sys", "/sys/fs/cgroup"} {
		if m := mountAt(cfg, dest); m == nil || m.Flags&unix.MS_RDONLY == 0 {
			t.Errorf("%s is not mounted read-only: %+v", dest, m)
		}
	}
	for _, r := range cfg.Cgroups.Resources.Devices {
		if r.Allow && r.Major == -1 && r.Minor == -1 && r.Type == 'a' {
			t.Errorf("unprivileged container may use every device: %+v", r)
		}
	}
	if !SeccompAvailable() {
		if cfg.Seccomp != nil {
			t.Fatalf("seccomp filter set in a binary without libseccomp: it would fail every start")
		}
		t.Logf("%s: the profile is not applied", SeccompUnavailableMessage)
		return
	}
	s := cfg.Seccomp
	if s == nil {
		t.Fatal("no default seccomp profile")
	}
	if s.DefaultAction != configs.Errno {
		t.Errorf("default action %v, want errno (an allowlist)", s.DefaultAction)
	}
	for _, name := range []string{"read", "write", "execve", "futex", "openat"} {
		if !allowed(s, name) {
			t.Errorf("%s is not allowed", name)
		}
	}
	for _, name := range []string{"mount", "umount2", "unshare", "setns", "keyctl", "add_key", "bpf", "kexec_load", "init_module", "reboot", "clone"} {
		if allowed(s, name) {
			t.Errorf("%s is allowed without the capability it needs", name)
		}
	}
}

func TestSecurityConfigCapabilities(t *testing.T) {
	all := allCapabilities()
	only := func(names ...string) []string {
		return sortedCopy(slices.DeleteFunc(names, func(c string) bool { return !slices.Contains(all, c) }))
	}
	without := func(drop ...string) []string {
		return only(slices.DeleteFunc(slices.Clone(defaultCapabilities), func(c string) bool { return slices.Contains(drop, c) })...)
	}
	for _, tc := range []struct {
		name string
		sc   *pb.SecurityContext
		want []string
	}{
		{"default", nil, without()},
		{"drop two", &pb.SecurityContext{Capabilities: &pb.Capabilities{Drop: []string{"NET_RAW", "cap_chown"}}}, without("CAP_NET_RAW", "CAP_CHOWN")},
		{"add", &pb.SecurityContext{Capabilities: &pb.Capabilities{Add: []string{"CAP_NET_ADMIN"}}}, only(append(slices.Clone(defaultCapabilities), "CAP_NET_ADMIN")...)},
		{"drop ALL add one", &pb.SecurityContext{Capabilities: &pb.Capabilities{Drop: []string{"ALL"}, Add: []string{"NET_BIND_SERVICE"}}}, []string{"CAP_NET_BIND_SERVICE"}},
		{"privileged", &pb.SecurityContext{Privileged: ptr(true), Capabilities: &pb.Capabilities{Drop: []string{"ALL"}}}, sortedCopy(all)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := configFor(t, &pb.Container{Name: "c", SecurityContext: tc.sc}, nil)
			for name, got := range map[string][]string{"bounding": cfg.Capabilities.Bounding, "effective": cfg.Capabilities.Effective, "permitted": cfg.Capabilities.Permitted} {
				if !slices.Equal(sortedCopy(got), tc.want) {
					t.Errorf("%s = %q, want %q", name, got, tc.want)
				}
			}
		})
	}
}

func TestSecurityConfigPrivileged(t *testing.T) {
	cfg := configFor(t, &pb.Container{Name: "c", SecurityContext: &pb.SecurityContext{Privileged: ptr(true)}}, nil)
	if len(cfg.MaskPaths) != 0 || len(cfg.ReadonlyPaths) != 0 {
		t.Errorf("masked %q read-only %q, want none", cfg.MaskPaths, cfg.ReadonlyPaths)
	}
	for _, dest := range []string{"/sys", "/sys/fs/cgroup"} {
		if m := mountAt(cfg, dest); m == nil || m.Flags&unix.MS_RDONLY != 0 {
			t.Errorf("%s is not writable: %+v", dest, m)
		}
	}
	if cfg.NoNewPrivileges || cfg.Seccomp != nil {
		t.Errorf("no_new_privs %v seccomp %v, want neither", cfg.NoNewPrivileges, cfg.Seccomp != nil)
	}
	if rules := cfg.Cgroups.Resources.Devices; len(rules) != 1 || !rules[0].Allow || rules[0].Type != 'a' {
		t.Errorf("device rules %+v, want allow all", rules)
	}
	host, err := devices.HostDevices()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, d := range cfg.Devices {
		if slices.Contains(paths, d.Path) {
			t.Errorf("device %s listed twice", d.Path)
		}
		paths = append(paths, d.Path)
	}
	for _, d := range host {
		if d.Path != "/dev/ptmx" && !slices.Contains(paths, d.Path) {
			t.Errorf("host device %s missing", d.Path)
		}
	}
}

func TestSecurityConfigOptions(t *testing.T) {
	ro := configFor(t, &pb.Container{Name: "c", SecurityContext: &pb.SecurityContext{ReadOnlyRootFilesystem: ptr(true)}}, nil)
	if !ro.Readonlyfs {
		t.Error("readOnlyRootFilesystem: rootfs is writable")
	}
	esc := configFor(t, &pb.Container{Name: "c", SecurityContext: &pb.SecurityContext{AllowPrivilegeEscalation: ptr(true)}}, nil)
	if esc.NoNewPrivileges {
		t.Error("allowPrivilegeEscalation: true still sets no_new_privs")
	}
	if esc.Seccomp == nil && SeccompAvailable() {
		t.Error("allowPrivilegeEscalation dropped the seccomp profile")
	}
	if unc := configFor(t, &pb.Container{Name: "c"}, &Security{Seccomp: SeccompUnconfined}); unc.Seccomp != nil || !unc.NoNewPrivileges {
		t.Errorf("unconfined: seccomp %v no_new_privs %v, want no filter and still no_new_privs", unc.Seccomp != nil, unc.NoNewPrivileges)
	}
	if !SeccompAvailable() {
		return
	}
	// The profile follows the capabilities: CAP_SYS_ADMIN allows mount.
	admin := configFor(t, &pb.Container{Name: "c", SecurityContext: &pb.SecurityContext{Capabilities: &pb.Capabilities{Add: []string{"SYS_ADMIN"}}}}, nil)
	if !allowed(admin.Seccomp, "mount") || !allowed(admin.Seccomp, "unshare") {
		t.Error("CAP_SYS_ADMIN: mount and unshare are still filtered")
	}
}

// capMask is the /proc/PID/status bitmask of caps.
func capMask(t *testing.T, caps []string) uint64 {
	t.Helper()
	var m uint64
	for _, name := range caps {
		found := false
		for _, c := range capability.ListKnown() {
			if "CAP_"+strings.ToUpper(c.String()) == name {
				m |= 1 << uint(c)
				found = true
			}
		}
		if !found {
			t.Fatalf("unknown capability %s", name)
		}
	}
	return m
}

// procStatus parses "Key:\tvalue" lines of a container's log.
func procStatus(lines []string) map[string]string {
	out := map[string]string{}
	for _, l := range lines {
		k, v, ok := strings.Cut(strings.TrimPrefix(l, "stdout: "), ":")
		if ok && !strings.Contains(k, " ") {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func hexMask(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		t.Fatalf("capability mask %q: %v", s, err)
	}
	return v
}

// between returns the log lines between two marker lines.
func between(lines []string, from, to string) []string {
	i, j := slices.Index(lines, "stdout: "+from), slices.Index(lines, "stdout: "+to)
	if i < 0 || j < i {
		return nil
	}
	return lines[i+1 : j]
}

// runToExit starts spec and waits for it to exit.
func (e *testEnv) runToExit(t *testing.T, sb *Sandbox, spec ContainerSpec) (ContainerStatus, []string) {
	t.Helper()
	if spec.Image == nil {
		spec.Image = fix.img
	}
	id, err := e.rt.StartContainer(ctxFor(t, 60*time.Second), sb, spec)
	if err != nil {
		t.Fatalf("start %s: %v", spec.Container.GetName(), err)
	}
	st := e.waitExited(t, id)
	return st, e.logs(t, id)
}

func TestSecurityContainerDefaults(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-sec-default", SandboxOptions{})
	st, lines := e.runToExit(t, sb, ContainerSpec{Container: app("status",
		"cat", "/proc/self/status", "out", "timer_list:", "cat", "/proc/timer_list", "out", "end:")})
	if st.ExitCode != 0 {
		t.Fatalf("status = %+v, logs %q", st, lines)
	}
	ps := procStatus(lines)
	want := capMask(t, slices.DeleteFunc(slices.Clone(defaultCapabilities), func(c string) bool { return !slices.Contains(allCapabilities(), c) }))
	for _, k := range []string{"CapEff", "CapPrm", "CapBnd"} {
		if got := hexMask(t, ps[k]); got != want {
			t.Errorf("%s = %016x, want Docker's default set %016x", k, got, want)
		}
	}
	for _, k := range []string{"CapInh", "CapAmb"} {
		if got := hexMask(t, ps[k]); got != 0 {
			t.Errorf("%s = %016x, want 0", k, got)
		}
	}
	if ps["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %q, want 1", ps["NoNewPrivs"])
	}
	// 2 is SECCOMP_MODE_FILTER.
	wantSeccomp := map[bool]string{true: "2", false: "0"}[SeccompAvailable()]
	if ps["Seccomp"] != wantSeccomp {
		t.Errorf("Seccomp = %q, want %s (libseccomp built in: %v)", ps["Seccomp"], wantSeccomp, SeccompAvailable())
	}
	// A masked file reads as empty; the host's has content.
	if tl := between(lines, "timer_list:", "end:"); len(tl) != 0 {
		t.Errorf("/proc/timer_list is not masked: %q...", tl[0])
	}
	// /proc/kcore (the kernel's memory) reads as empty, or is missing
	// where the kernel has none.
	_, hostErr := os.Stat("/proc/kcore")
	st, lines = e.runToExit(t, sb, ContainerSpec{Container: app("kcore", "cat", "/proc/kcore", "out", "end:")})
	switch {
	case hostErr == nil && (st.ExitCode != 0 || !slices.Equal(lines, []string{"stdout: end:"})):
		t.Errorf("/proc/kcore is readable: status %+v, %d lines", st, len(lines))
	case hostErr != nil && (st.ExitCode != 101 || !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "no such file") })):
		t.Errorf("/proc/kcore (absent on the host): status %+v, logs %q", st, lines)
	}

	// /proc/sys and /sys are read-only.
	for _, path := range []string{"/proc/sys/kernel/domainname", "/sys/kernel/uevent_helper"} {
		st, lines := e.runToExit(t, sb, ContainerSpec{Container: app("write", "write", path, "x")})
		if st.ExitCode != 101 || !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "read-only file system") }) {
			t.Errorf("write %s: status %+v, logs %q; want it refused as read-only", path, st, lines)
		}
	}
}

func TestSecurityContainerUser(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-sec-user", SandboxOptions{})
	c := app("user", "id", "cat", "/proc/self/status")
	c.SecurityContext = &pb.SecurityContext{RunAsUser: ptr[int64](1000)}
	st, lines := e.runToExit(t, sb, ContainerSpec{Container: c,
		PodSecurityContext: &pb.PodSecurityContext{RunAsUser: ptr[int64](2000), RunAsGroup: ptr[int64](3000), SupplementalGroups: []int64{4000}, FsGroup: ptr[int64](5000)}})
	if st.ExitCode != 0 {
		t.Fatalf("status = %+v, logs %q", st, lines)
	}
	// Container runAsUser over the pod's; the pod's group, supplemental
	// groups and fsGroup.
	if !contains(lines, "stdout: uid=1000 gid=3000 groups=[4000 5000]") {
		t.Errorf("id: %q", lines)
	}
	// A non-root user's processes hold no capabilities after exec (none
	// are ambient), though the bounding set is the default.
	ps := procStatus(lines)
	if hexMask(t, ps["CapEff"]) != 0 || hexMask(t, ps["CapPrm"]) != 0 {
		t.Errorf("uid 1000 holds capabilities: CapEff %s CapPrm %s", ps["CapEff"], ps["CapPrm"])
	}

	// runAsNonRoot refuses root, before anything is created.
	root := app("root", "out", "x")
	root.SecurityContext = &pb.SecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr[int64](0)}
	_, err := e.rt.StartContainer(ctxFor(t, 30*time.Second), sb, ContainerSpec{Container: root, Image: fix.img})
	if !errors.Is(err, ErrRunAsNonRoot) || !strings.Contains(err.Error(), "container has runAsNonRoot and image will run as root") {
		t.Errorf("runAsNonRoot as root: err = %v", err)
	}
	if cs, _ := e.rt.List(); len(cs) != 1 {
		t.Errorf("containers after the refused start: %+v", cs)
	}
}

func TestSecurityContainerReadOnlyRootfs(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-sec-ro", SandboxOptions{})
	vol := t.TempDir()
	c := app("ro", "write", "/data/ok", "yes", "out", "wrote volume", "write", "/tmp/nope", "x")
	c.SecurityContext = &pb.SecurityContext{ReadOnlyRootFilesystem: ptr(true)}
	st, lines := e.runToExit(t, sb, ContainerSpec{Container: c, Mounts: []Mount{{HostPath: vol, ContainerPath: "/data"}}})
	if st.ExitCode != 101 || !contains(lines, "stdout: wrote volume") ||
		!slices.ContainsFunc(lines, func(l string) bool {
			return strings.Contains(l, "/tmp/nope") && strings.Contains(l, "read-only file system")
		}) {
		t.Errorf("status %+v, logs %q; want the volume writable and the rootfs not", st, lines)
	}
	if b, err := os.ReadFile(filepath.Join(vol, "ok")); err != nil || string(b) != "yes" {
		t.Errorf("volume file: %q, %v", b, err)
	}
}

func TestSecurityContainerPrivileged(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-sec-priv", SandboxOptions{})
	c := app("priv", "cat", "/proc/self/status", "out", "timer_list:", "cat", "/proc/timer_list", "out", "end:")
	c.SecurityContext = &pb.SecurityContext{Privileged: ptr(true)}
	st, lines := e.runToExit(t, sb, ContainerSpec{Container: c})
	if st.ExitCode != 0 {
		t.Fatalf("status = %+v, logs %q", st, lines)
	}
	ps := procStatus(lines)
	want := capMask(t, allCapabilities())
	for _, k := range []string{"CapEff", "CapBnd"} {
		if got := hexMask(t, ps[k]); got != want {
			t.Errorf("%s = %016x, want every capability the worker has %016x", k, got, want)
		}
	}
	if ps["NoNewPrivs"] != "0" || ps["Seccomp"] != "0" {
		t.Errorf("NoNewPrivs %q Seccomp %q, want 0 and 0", ps["NoNewPrivs"], ps["Seccomp"])
	}
	if len(between(lines, "timer_list:", "end:")) == 0 {
		t.Error("/proc/timer_list is masked in a privileged container")
	}
}

// probeSource is a static helper run inside containers for what testapp
// cannot do: system calls that a hardened container must be refused.
const probeSource = `package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func report(name string, err error) {
	if err != nil {
		fmt.Printf("%s: %v\n", name, err)
		return
	}
	fmt.Printf("%s: ok\n", name)
}

func main() {
	for _, step := range os.Args[1:] {
		switch step {
		case "mount":
			report("mount", syscall.Mount("tmpfs", "/tmp", "tmpfs", 0, ""))
		case "keyctl":
			// KEYCTL_GET_KEYRING_ID of the session keyring, creating it.
			_, _, e := syscall.Syscall(syscall.SYS_KEYCTL, 0, ^uintptr(2), 1)
			var err error
			if e != 0 {
				err = e
			}
			report("keyctl", err)
		case "raw":
			fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_ICMP)
			if err == nil {
				syscall.Close(fd)
			}
			report("raw", err)
		case "chown":
			report("chown", syscall.Chown("/tmp", 1234, 1234))
		case "x32-keyctl":
			// keyctl through the x32 ABI (__X32_SYSCALL_BIT): a filter
			// that forgot that ABI would let it through. A filter
			// without x32 rules kills the calling thread instead (bad
			// architecture), so the call runs on a thread of its own
			// and silence is an answer too.
			done := make(chan error, 1)
			go func() {
				_, _, e := syscall.Syscall(0x40000000|syscall.SYS_KEYCTL, 0, ^uintptr(2), 1)
				if e != 0 {
					done <- e
					return
				}
				done <- nil
			}()
			select {
			case err := <-done:
				report("x32-keyctl", err)
			case <-time.After(3 * time.Second):
				fmt.Println("x32-keyctl: thread killed")
			}
		case "unshare":
			report("unshare", syscall.Unshare(syscall.CLONE_NEWUTS))
		case "sethostname":
			report("sethostname", syscall.Sethostname([]byte("probe")))
		case "clone3":
			// clone3(NULL, 0): EINVAL where the call is allowed, ENOSYS
			// where Docker's profile answers for it.
			var err error
			if _, _, e := syscall.Syscall(435, 0, 0, 0); e != 0 {
				err = e
			}
			report("clone3", err)
		case "personality":
			// READ_IMPLIES_EXEC: not among the personalities Docker's
			// profile allows.
			var err error
			if _, _, e := syscall.Syscall(syscall.SYS_PERSONALITY, 0x0400000, 0, 0); e != 0 {
				err = e
			}
			report("personality", err)
		case "filters":
			b, _ := os.ReadFile("/proc/self/status")
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "Seccomp_filters:"); ok {
					fmt.Printf("filters: %s\n", strings.TrimSpace(v))
				}
			}
		case "wait":
			// Stay, for execs, until the container is stopped.
			term := make(chan os.Signal, 1)
			signal.Notify(term, syscall.SIGTERM)
			<-term
		case "procs":
			ents, _ := os.ReadDir("/proc")
			var pids []string
			for _, e := range ents {
				if strings.Trim(e.Name(), "0123456789") == "" {
					pids = append(pids, e.Name())
				}
			}
			fmt.Printf("procs: %s\n", strings.Join(pids, ","))
		default:
			fmt.Printf("%s: unknown step\n", step)
			os.Exit(2)
		}
	}
}
`

var (
	probeOnce sync.Once
	probePath string
	probeErr  error
)

// probeBinary builds probeSource statically, once per test process,
// cached in the temp directory by the hash of its source.
func probeBinary(t *testing.T) string {
	t.Helper()
	probeOnce.Do(func() {
		sum := sha256.Sum256([]byte(probeSource + goVersion()))
		out := filepath.Join(os.TempDir(), "skiff-secprobe-"+hex.EncodeToString(sum[:8]))
		if _, err := os.Stat(out); err == nil {
			probePath = out
			return
		}
		dir, err := os.MkdirTemp("", "skiff-secprobe-src-")
		if err != nil {
			probeErr = err
			return
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module secprobe\n\ngo 1.21\n"), 0o644); err != nil {
			probeErr = err
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(probeSource), 0o644); err != nil {
			probeErr = err
			return
		}
		tmp := fmt.Sprintf("%s.tmp%d", out, os.Getpid())
		cmd := exec.Command("go", "build", "-trimpath", "-o", tmp, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false", "GOWORK=off")
		if b, err := cmd.CombinedOutput(); err != nil {
			probeErr = fmt.Errorf("build the probe: %v\n%s", err, b)
			return
		}
		probeErr = os.Rename(tmp, out)
		probePath = out
	})
	if probeErr != nil {
		t.Fatal(probeErr)
	}
	return probePath
}

func goVersion() string {
	b, _ := exec.Command("go", "env", "GOVERSION").Output()
	return string(b)
}

// probe runs the probe's steps in a container with securityContext sc
// and returns its "step: result" lines.
func (e *testEnv) probe(t *testing.T, sb *Sandbox, name string, sc *pb.SecurityContext, steps ...string) map[string]string {
	t.Helper()
	c := &pb.Container{Name: name, Image: fix.ref, Command: append([]string{"/probe"}, steps...), SecurityContext: sc}
	st, lines := e.runToExit(t, sb, ContainerSpec{Container: c, Mounts: []Mount{{HostPath: probeBinary(t), ContainerPath: "/probe", ReadOnly: true}}})
	if st.ExitCode != 0 {
		t.Fatalf("probe %s: status %+v, logs %q", name, st, lines)
	}
	return procStatus(lines)
}

func TestSecurityContainerSyscalls(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-sec-sys", SandboxOptions{})
	const eperm = "operation not permitted"

	got := e.probe(t, sb, "default", nil, "mount", "keyctl", "raw", "chown", "procs")
	// No CAP_SYS_ADMIN: no mount.
	if got["mount"] != eperm {
		t.Errorf("mount: %q, want %q", got["mount"], eperm)
	}
	// Only the container's own process is visible: not the host's.
	if got["procs"] != "1" {
		t.Errorf("visible processes: %q, want only pid 1", got["procs"])
	}
	// Default capabilities at work.
	if got["raw"] != "ok" || got["chown"] != "ok" {
		t.Errorf("raw socket %q, chown %q; want both allowed by NET_RAW and CHOWN", got["raw"], got["chown"])
	}
	// keyctl is outside Docker's profile; only seccomp stops it.
	if SeccompAvailable() {
		if got["keyctl"] == "ok" {
			t.Error("keyctl allowed under the default seccomp profile")
		}
	} else if got["keyctl"] != "ok" {
		t.Errorf("keyctl without seccomp: %q", got["keyctl"])
	}

	// Dropped capabilities are gone.
	got = e.probe(t, sb, "dropped", &pb.SecurityContext{Capabilities: &pb.Capabilities{Drop: []string{"NET_RAW", "CHOWN"}}}, "raw", "chown")
	if got["raw"] != eperm || got["chown"] != eperm {
		t.Errorf("after dropping NET_RAW and CHOWN: raw %q chown %q, want %q", got["raw"], got["chown"], eperm)
	}
	got = e.probe(t, sb, "drop-all", &pb.SecurityContext{Capabilities: &pb.Capabilities{Drop: []string{"ALL"}, Add: []string{"NET_BIND_SERVICE"}}}, "raw")
	if got["raw"] != eperm {
		t.Errorf("drop ALL: raw %q, want %q", got["raw"], eperm)
	}

	// Unconfined lifts the filter, not the capabilities.
	c := &pb.Container{Name: "unconfined", Image: fix.ref, Command: []string{"/probe", "keyctl", "mount"}}
	st, lines := e.runToExit(t, sb, ContainerSpec{Container: c, Security: &Security{Seccomp: SeccompUnconfined},
		Mounts: []Mount{{HostPath: probeBinary(t), ContainerPath: "/probe", ReadOnly: true}}})
	got = procStatus(lines)
	if st.ExitCode != 0 || got["keyctl"] != "ok" || got["mount"] != eperm {
		t.Errorf("unconfined: status %+v, keyctl %q mount %q", st, got["keyctl"], got["mount"])
	}
}

// The x32 ABI is left out of the filter only on kernels that refuse it:
// there it saves a third of the filter's compile time in every
// container's init and guards nothing.
func TestSecurityConfigX32(t *testing.T) {
	if !SeccompAvailable() {
		if s, err := seccompConfig(SeccompRuntimeDefault, defaultCapabilities, true); err != nil || s != nil {
			t.Fatalf("without libseccomp: filter %v, err %v; want none", s, err)
		}
		return
	}
	for _, noX32 := range []bool{false, true} {
		s, err := seccompConfig(SeccompRuntimeDefault, defaultCapabilities, noX32)
		if err != nil {
			t.Fatal(err)
		}
		if goruntime.GOARCH != "amd64" {
			if slices.Contains(s.Architectures, "x32") {
				t.Errorf("noX32=%v on %s: architectures %q include x32", noX32, goruntime.GOARCH, s.Architectures)
			}
			continue
		}
		want := []string{"amd64", "x86", "x32"}
		if noX32 {
			// 32-bit x86 programs still get the same allowlist.
			want = []string{"amd64", "x86"}
		}
		if !slices.Equal(s.Architectures, want) {
			t.Errorf("noX32=%v: architectures %q, want %q", noX32, s.Architectures, want)
		}
		if !allowed(s, "read") || allowed(s, "keyctl") {
			t.Errorf("noX32=%v: the allowlist changed", noX32)
		}
	}
	// The runtime's own answer matches the kernel's: an x32 call is
	// ENOSYS exactly where the runtime drops the rules.
	_, _, errno := unix.RawSyscall(x32SyscallBit|unix.SYS_GETPID, 0, 0, 0)
	if got, want := kernelRejectsX32(), goruntime.GOARCH == "amd64" && errno == unix.ENOSYS; got != want {
		t.Errorf("kernelRejectsX32() = %v, want %v (x32 getpid: %v)", got, want, errno)
	}
}

// Whatever the runtime decides about x32, a system call made through that
// ABI never gets past the filter: keyctl, refused through the native ABI,
// must not succeed through x32 either.
func TestSecurityContainerX32(t *testing.T) {
	if goruntime.GOARCH != "amd64" || !SeccompAvailable() {
		t.Logf("x32 is an amd64 ABI and needs libseccomp to filter: nothing to check on %s (seccomp %v)", goruntime.GOARCH, SeccompAvailable())
		return
	}
	e := newEnv(t)
	sb := e.sandbox(t, "pod-sec-x32", SandboxOptions{})
	for _, noX32 := range []bool{e.rt.noX32, !e.rt.noX32} {
		if noX32 && !kernelRejectsX32() {
			// Leaving the rules out on a kernel that runs x32 would
			// open the bypass this test looks for.
			continue
		}
		e.rt.noX32 = noX32
		name := fmt.Sprintf("x32-%v", noX32)
		c := &pb.Container{Name: name, Image: fix.ref, Command: []string{"/probe", "x32-keyctl"}}
		st, lines := e.runToExit(t, sb, ContainerSpec{Container: c,
			Mounts: []Mount{{HostPath: probeBinary(t), ContainerPath: "/probe", ReadOnly: true}}})
		got := procStatus(lines)["x32-keyctl"]
		// With x32 rules the allowlist refuses keyctl (EPERM); without
		// them the calling thread is killed. Never through.
		want := "operation not permitted"
		if noX32 {
			want = "thread killed"
		}
		if st.ExitCode != 0 || got != want {
			t.Errorf("noX32=%v: x32 keyctl %q, want %q; status %+v, logs %q", noX32, got, want, st, lines)
		}
	}
}

// BenchmarkContainerRecord is what a default container's record costs on
// its way from the worker to the shim: the worker encodes it, the shim
// decodes it and, since the twenty-third session, builds the seccomp
// filter itself. "filter-in-record" is the former way, the filter encoded
// and decoded with the rest.
func BenchmarkContainerRecord(b *testing.B) {
	caps, err := resolveCapabilities(nil, allCapabilities())
	if err != nil {
		b.Fatal(err)
	}
	r := &Runtime{log: quietLogger(), noX32: kernelRejectsX32()}
	sb := &Sandbox{PodUID: "p", IPCNSPath: "/x/ipc", NetNSPath: "/x/net", UTSNSPath: "/x/uts", ShmPath: "/x/shm", CgroupPath: "/skiff/p"}
	cfg, sd := r.containerConfig("c1", sb, "/x/rootfs", ContainerSpec{Container: &pb.Container{Name: "c"}}, resources{}, caps)
	if sd == nil {
		b.Fatal("no default seccomp profile: build with -tags seccomp")
	}
	full := *cfg
	if full.Seccomp, err = sd.Config(); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		rec  *shim.Record
	}{
		{"filter-in-record", &shim.Record{ID: "c1", Config: &full}},
		{"shim-builds-filter", &shim.Record{ID: "c1", Config: cfg, SeccompDefault: sd}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var size int
			for b.Loop() {
				data, err := json.Marshal(bc.rec)
				if err != nil {
					b.Fatal(err)
				}
				size = len(data)
				var got shim.Record
				if err := json.Unmarshal(data, &got); err != nil {
					b.Fatal(err)
				}
				if got.SeccompDefault != nil {
					if got.Config.Seccomp, err = got.SeccompDefault.Config(); err != nil {
						b.Fatal(err)
					}
				}
				if len(got.Config.Seccomp.Syscalls) == 0 {
					b.Fatal("no filter")
				}
			}
			b.ReportMetric(float64(size), "record-bytes")
		})
	}
}
